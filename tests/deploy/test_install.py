"""The agent installer in a throwaway root: install from the offline bundle `make wheelhouse` builds (for
this machine's platform here), upgrade, uninstall and purge.

Every path goes under DESTDIR, and the commands that would change this machine (useradd, usermod,
userdel, chown, systemctl) are recorders that log their arguments: the test checks the files, their
modes, and the commands the installer ran.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from agent.config import AgentConfig
from tests.paths import REPO

ROOT = REPO


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host's bundle, unpacked as a technician would: the wheels beside install-agent.sh."""
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "wheelhouse.py"), "--target", "host", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    unpacked = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(out / "kilowatch-agent-host.tar.gz") as tar:
        tar.extractall(unpacked, filter="data")
    return unpacked / "kilowatch-agent-host"


class Installer:
    """install-agent.sh run against `root` with recording stand-ins for the system commands."""

    def __init__(self, script: Path, root: Path, log: Path) -> None:
        self.script = script
        self.root = root
        self.log = log
        self.bin = log.parent / "bin"
        self.bin.mkdir(exist_ok=True)
        for name in ("useradd", "usermod", "userdel", "chown", "systemctl"):
            recorder = self.bin / name
            recorder.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
            recorder.chmod(0o755)

    def __call__(self, *args: str, user_exists: bool) -> list[str]:
        """Run it; the commands it ran, one line each."""
        self.log.write_text("")
        env = {
            **os.environ,
            "DESTDIR": str(self.root),
            "PYTHON": sys.executable,
            "GETENT": "true" if user_exists else "false",
            **{
                name.upper(): str(self.bin / name)
                for name in ("useradd", "usermod", "userdel", "chown", "systemctl")
            },
        }
        result = subprocess.run(
            ["sh", str(self.script), *args], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return self.log.read_text().splitlines()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_upgrade_uninstall_purge(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    install = Installer(bundle / "install-agent.sh", root, tmp_path / "commands.log")
    key = root / "etc/kilowatch/client.key"  # the technician put the certificate's key there first
    key.parent.mkdir(parents=True)
    key.write_text("key")
    key.chmod(0o600)

    ran = install(user_exists=False)
    assert ran == [
        "useradd --system --user-group --groups dialout --home-dir /var/lib/kilowatch --no-create-home "
        "--shell /usr/sbin/nologin --comment kilowatch agent kilowatch",
        "chown kilowatch:kilowatch " + str(root / "var/lib/kilowatch"),
        "chown root:kilowatch " + str(root / "etc/kilowatch"),
        "chown root:kilowatch " + str(key),
        "chown root:kilowatch " + str(root / "etc/kilowatch/agent.yaml"),
        "systemctl daemon-reload",
        "systemctl enable kilowatch-agent.service",
    ]  # not started: the sample config is still to be edited
    config = root / "etc/kilowatch/agent.yaml"
    assert (mode(config), mode(config.parent), mode(root / "var/lib/kilowatch")) == (0o640, 0o750, 0o750)
    assert mode(key) == 0o640
    sample = AgentConfig.model_validate(yaml.safe_load(config.read_text()))
    assert sample.spool.path == Path("/var/lib/kilowatch/spool.db")
    unit = root / "etc/systemd/system/kilowatch-agent.service"
    assert unit.read_text() == (ROOT / "deploy/systemd/kilowatch-agent.service").read_text()
    assert mode(unit) == 0o644
    venv_kilowatch = root / "opt/kilowatch/venv/bin/kilowatch"
    assert os.readlink(root / "usr/local/bin/kilowatch") == "/opt/kilowatch/venv/bin/kilowatch"
    assert (
        "check"
        in subprocess.run(
            [venv_kilowatch, "agent", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )

    # Upgrade: the technician's config and the spool stay as they are; the service restarts.
    config.write_text("site: edited\n")
    spool = root / "var/lib/kilowatch/spool.db"
    spool.write_bytes(b"spooled batches")
    ran = install(user_exists=True)
    assert ran[0] == "usermod --append --groups dialout kilowatch"
    assert ran[-1] == "systemctl restart kilowatch-agent.service"
    assert (config.read_text(), spool.read_bytes()) == ("site: edited\n", b"spooled batches")

    ran = install("--uninstall", user_exists=True)
    assert ran == ["systemctl disable --now kilowatch-agent.service", "systemctl daemon-reload"]
    assert not (root / "opt/kilowatch").exists()
    assert not unit.exists()
    assert not (root / "usr/local/bin/kilowatch").is_symlink()
    assert (config.read_text(), spool.read_bytes()) == ("site: edited\n", b"spooled batches")

    ran = install("--uninstall", "--purge", user_exists=True)
    assert ran[-1] == "userdel kilowatch"
    assert not (root / "etc/kilowatch").exists()
    assert not (root / "var/lib/kilowatch").exists()


def test_install_with_a_config_starts_the_service(bundle: Path, tmp_path: Path) -> None:
    given = tmp_path / "agent.yaml"
    given.write_text("site: s1\ngateway: g1\nbuses: []\n")
    install = Installer(bundle / "install-agent.sh", tmp_path / "root", tmp_path / "commands.log")
    ran = install("--config", str(given), user_exists=False)
    assert ran[-1] == "systemctl restart kilowatch-agent.service"
    config = tmp_path / "root/etc/kilowatch/agent.yaml"
    assert (config.read_text(), mode(config)) == (given.read_text(), 0o640)
