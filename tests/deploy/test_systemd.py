"""The hardened systemd units: valid for systemd (`systemd-analyze verify`) and with an exposure
(`systemd-analyze security`) no worse than the figure deploy/README.md states.

Neither needs systemd as PID 1. `verify` insists that ExecStart's program exists, so it checks a copy of
each unit whose ExecStart points at this checkout's own `kilowatch` instead of /opt/kilowatch's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

UNITS = REPO / "deploy" / "systemd"
INSTALLED_KILOWATCH = "/opt/kilowatch/venv/bin/kilowatch"

EXPOSURE = {
    "kilowatch-agent.service": 1.6,
    "kilowatch-collector.service": 1.1,
    "kilowatch-backup.service": 0.2,
}
"""The highest exposure each unit may have (0 = fully locked down, 10 = unprotected), as in deploy/README.md."""
SERVICES = ("kilowatch-agent.service", "kilowatch-collector.service")
"""The long-running ones (the backup is a oneshot its timer starts)."""
DEBIAN_MOSQUITTO = Path("/lib/systemd/system/mosquitto.service")


def local_copy(unit: str, folder: Path) -> Path:
    """`unit` with ExecStart on the `kilowatch` of the running interpreter's environment."""
    text = (UNITS / unit).read_text()
    assert INSTALLED_KILOWATCH in text
    kilowatch = Path(sys.executable).parent / "kilowatch"
    assert kilowatch.exists()
    copy = folder / unit
    copy.write_text(text.replace(INSTALLED_KILOWATCH, str(kilowatch)))
    return copy


@pytest.mark.parametrize("unit", sorted(EXPOSURE))
def test_unit_verifies(unit: str, tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check has teeth: systemd ignores a misspelt key or value with only a warning (exit 0), which the
    test above counts as a failure."""
    copy = local_copy("kilowatch-agent.service", tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert "Unknown key 'ProtectSytem'" in result.stderr


@pytest.mark.parametrize("unit", sorted(EXPOSURE))
def test_unit_exposure_at_most_the_stated_score(unit: str, tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(local_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout
    assert float(found[1]) <= EXPOSURE[unit], result.stdout


@pytest.mark.parametrize("unit", SERVICES)
def test_unit_has_the_required_settings(unit: str) -> None:
    settings = {
        line.partition("=")[0]: line.partition("=")[2]
        for line in (UNITS / unit).read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert {
        key: settings.get(key)
        for key in (
            "Type",
            "ProtectSystem",
            "NoNewPrivileges",
            "PrivateTmp",
            "ProtectHome",
            "DevicePolicy",
            "Restart",
            "StateDirectory",
            "User",
            "StandardError",
        )
    } == {
        "Type": "notify",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "DevicePolicy": "closed",
        "Restart": "always",
        "StateDirectory": "kilowatch",
        "User": "kilowatch",
        "StandardError": "journal",
    }
    assert {"MemoryMax", "WatchdogSec"} <= settings.keys()


def test_agent_may_open_serial_ports_only() -> None:
    text = (UNITS / "kilowatch-agent.service").read_text()
    assert re.findall(r"^DeviceAllow=(\S+) rw$", text, re.MULTILINE) == [
        "char-ttyS",
        "char-ttyAMA",
        "char-ttyUSB",
        "char-ttyACM",
    ]
    assert "SupplementaryGroups=dialout" in text


def test_backup_timer_and_service_verify_together(tmp_path: Path) -> None:
    local_copy("kilowatch-backup.service", tmp_path)
    timer = tmp_path / "kilowatch-backup.timer"
    timer.write_text((UNITS / "kilowatch-backup.timer").read_text())
    result = subprocess.run(
        ["systemd-analyze", "verify", str(timer)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    service = (UNITS / "kilowatch-backup.service").read_text()
    assert re.search(r"^ExecStart=\S+ collector backup .*--dir (\S+) --keep \d+$", service, re.MULTILINE)
    assert "StateDirectory=kilowatch kilowatch-backup" in service
    assert "Persistent=true" in timer.read_text()


def test_mosquitto_drop_in_applies_to_the_debian_unit(tmp_path: Path) -> None:
    """systemd loads the drop-in beside Debian's own unit without a complaint, and it raises the descriptor
    limit well above the 1,024 sockets that ~1,000 gateways need."""
    (tmp_path / "mosquitto.service").write_text(DEBIAN_MOSQUITTO.read_text())
    drop_in = tmp_path / "mosquitto.service.d" / "kilowatch.conf"
    drop_in.parent.mkdir()
    text = (UNITS / "mosquitto.service.d" / "kilowatch.conf").read_text()
    drop_in.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    drop_in.write_text(text.replace("LimitNOFILE", "LimitNOFILEX"))  # it is read: a typo shows
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Unknown key 'LimitNOFILEX'" in result.stderr
    limit = re.search(r"^LimitNOFILE=(\d+)$", text, re.MULTILINE)
    assert limit
    assert int(limit[1]) >= 8 * 1024
