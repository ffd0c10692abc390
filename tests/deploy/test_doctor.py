"""`kilowatch agent doctor` as a process: a healthy gateway (the simulator over TCP, Mosquitto with TLS and
a password) passes every check; a broken one fails each check once, with its fix printed.

`timedatectl` and `systemctl` are stand-ins on PATH that print what a gateway's would (this machine has no
systemd as PID 1); without them the doctor says unknown.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import SpoolSettings
from agent.spool import Spool
from app.processes import Mosquitto, TlsListener, require_binary
from kilowatch.profiles import load_builtin
from sim.server import SimServer
from tests.services import TestCertificates

pytestmark = pytest.mark.services

USER, PASSWORD = "gw-01", "gw-s3cret"
CHECKS = [
    "config",
    "meter m1 (bus hall, unit 1)",
    "meter m2 (bus hall, unit 2)",
    "clock",
    "spool space",
    "spool integrity",
    "unit",
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, certs: TestCertificates) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwd"
    subprocess.run(
        [require_binary("mosquitto_passwd"), "-b", "-c", str(passwords), USER, PASSWORD],
        check=True,
        timeout=30,
    )
    mosquitto = Mosquitto.start(
        tmp_path / "mosquitto",
        extra_conf=f"allow_anonymous false\npassword_file {passwords}\n",
        tls=TlsListener(certs.ca, certs.server_cert, certs.server_key),
    )
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(profile=load_builtin("eastron-sdm630"), units=[1, 2], port=0) as server:
        yield server


def stand_ins(folder: Path, *, ntp: str, unit: str) -> Path:
    """A folder with `timedatectl` answering `ntp` and `systemctl` answering `unit` (exit 3 unless active)."""
    folder.mkdir()
    for name, out, code in (("timedatectl", ntp, 0), ("systemctl", unit, 0 if unit == "active" else 3)):
        (folder / name).write_text(f"#!/bin/sh\necho {out}\nexit {code}\n")
        (folder / name).chmod(0o755)
    return folder


def write_config(path: Path, **sections: Any) -> Path:
    path.write_text(json.dumps({"site": "s1", "gateway": "g1", **sections}))  # JSON is YAML
    return path


async def doctor(config: Path, path: Path | None, *args: str) -> tuple[int, str]:
    env = {**os.environ, "PATH": str(path) if path else "/nonexistent"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "agent", "doctor", "--config", str(config), "--user", "root", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode()


def mqtt(broker: Mosquitto, ca: Path) -> dict[str, Any]:
    return {
        "host": "localhost",
        "port": broker.port,
        "username": USER,
        "password": PASSWORD,
        "tls": {"ca_file": str(ca)},
    }


async def test_healthy_gateway(
    tmp_path: Path, broker: Mosquitto, sim: SimServer, certs: TestCertificates
) -> None:
    spool = Spool(SpoolSettings(path=tmp_path / "spool.db"), boot_id=None)
    spool.close()
    config = write_config(
        tmp_path / "agent.yaml",
        mqtt=mqtt(broker, certs.ca),
        spool={"path": str(tmp_path / "spool.db")},
        buses=[{"name": "hall", "transport": "tcp", "host": "127.0.0.1", "port": sim.port,
                "meters": [{"id": "m1", "profile": "sdm630", "unit": 1}, {"id": "m2", "profile": "sdm630", "unit": 2}]}],
    )  # fmt: skip
    code, out = await doctor(config, stand_ins(tmp_path / "bin", ntp="yes", unit="active"), "--json")
    report = json.loads(out)
    assert (code, report["ok"]) == (0, True), out
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {*CHECKS, f"broker mqtts://localhost:{broker.port}"}
    assert {c["status"] for c in checks.values()} == {"ok"}, out
    assert checks[f"broker mqtts://localhost:{broker.port}"]["detail"] == f"connected (TLS, as {USER})"
    assert "quick_check ok, 0 batch(es) waiting" in checks["spool integrity"]["detail"]

    code, out = await doctor(config, None)  # no systemd, no NTP tools: the kernel is asked about the clock
    assert "[ ?? ] unit: no systemd to ask about kilowatch-agent.service" in out
    assert "(kernel)" in out


async def test_every_check_fails_with_its_fix(
    tmp_path: Path, broker: Mosquitto, certs: TestCertificates
) -> None:
    invalid = write_config(tmp_path / "invalid.yaml", buses=[{"name": "hall", "transport": "tcp", "host": "h", "meters": [{"id": "m1", "profile": "sdm630", "unit": 300}]}])  # fmt: skip
    code, out = await doctor(invalid, None)
    assert code == 1
    assert out.splitlines()[0].startswith(f"[FAIL] config: {invalid}: ")
    assert "unit" in out.splitlines()[0]
    assert out.splitlines()[1].startswith("       fix: correct the keys named")

    spool = tmp_path / "spool.db"
    spool.write_bytes(b"not a database" * 100)
    port = tmp_path / "ttyUSB9"
    config = write_config(
        tmp_path / "agent.yaml",
        mqtt=mqtt(broker, certs.other_ca),  # a CA that did not sign the broker's certificate
        spool={"path": str(spool), "max_bytes": 2**60},  # more than any disk
        buses=[{"name": "hall", "transport": "rtu", "port": str(port), "meters": [{"id": "m1", "profile": "sdm630", "unit": 1}]}],
    )  # fmt: skip
    code, out = await doctor(config, stand_ins(tmp_path / "bin", ntp="no", unit="failed"))
    assert code == 1, out
    lines = out.splitlines()
    failed = [line.removeprefix("[FAIL] ").partition(": ")[0] for line in lines if line.startswith("[FAIL]")]
    assert failed == [
        f"serial port {port} (bus hall)",
        "meter m1 (bus hall, unit 1)",
        f"broker mqtts://localhost:{broker.port}",
        "clock",
        "spool space",
        "spool integrity",
        "unit",
    ], out
    fixes = [line.strip() for line in lines if line.startswith("       fix:")]
    assert len(fixes) == len(failed), out
    assert "certificate" in out.split("[FAIL] broker")[1].splitlines()[0].lower()
    assert "fix: the broker's certificate must be signed by mqtt.tls.ca_file" in out
    assert "fix: enable NTP" in out
    assert "fix: free disk space or lower spool.max_bytes" in out
    assert f"fix: stop the agent, move {spool} aside" in out
    assert "fix: `sudo systemctl enable --now kilowatch-agent.service`" in out
    assert lines[-1] == "7 check(s) failed"

    code, out = await doctor(config, None, "--json")
    report = json.loads(out)
    assert (code, report["ok"]) == (1, False)
    assert all(c["fix"] for c in report["checks"] if c["status"] == "fail")
