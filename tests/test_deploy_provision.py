"""`kilowatch collector provision-gateway / revoke-gateway` against the real Mosquitto: a provisioned gateway
publishes on its topics with the agent.yaml it was given, cannot publish on another gateway's topics or take
its client id, and once revoked is refused."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
import yaml

from agent.config import AgentConfig
from app.processes import Mosquitto, TlsListener
from app.provision import hashed_entry
from kilowatch.broker import BrokerSettings
from tests.services import TestCertificates

pytestmark = pytest.mark.services

WATCHER, WATCHER_PW = "watcher", "watcher-pw"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path, Path, TestCertificates]]:
    """Mosquitto with a password file and an ACL that hold only a watcher reading everything."""
    certs = TestCertificates.generate(tmp_path / "pki")
    passwd, acl = tmp_path / "kilowatch.passwd", tmp_path / "kilowatch.acl"
    passwd.write_text(hashed_entry(WATCHER, WATCHER_PW) + "\n")
    acl.write_text(f"user {WATCHER}\ntopic read kilowatch/v1/#\n")
    mosquitto = Mosquitto.start(
        tmp_path / "mosquitto",
        extra_conf=f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\nuse_username_as_clientid true\n",
        tls=TlsListener(certs.ca, certs.server_cert, certs.server_key),
    )
    yield mosquitto, passwd, acl, certs
    mosquitto.stop()


def kilowatch(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def reload(broker: Mosquitto) -> None:
    """`systemctl reload mosquitto`: SIGHUP re-reads the password file and the ACL."""
    assert broker.process.proc is not None
    broker.process.proc.send_signal(signal.SIGHUP)


def gateway_settings(agent_yaml: Path, ca: Path) -> BrokerSettings:
    """The broker settings of a provisioned agent.yaml, with the test CA where the gateway keeps its own."""
    data = yaml.safe_load(agent_yaml.read_text())
    data["mqtt"]["tls"]["ca_file"] = str(ca)
    return AgentConfig.model_validate(data).mqtt


async def logs_in(settings: BrokerSettings, within_s: float = 10) -> None:
    """Wait until the broker (reloading) accepts `settings`' login."""
    async with asyncio.timeout(within_s):
        while True:
            try:
                async with settings.client(identifier="probe", timeout=5):
                    return
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


async def refused(settings: BrokerSettings, within_s: float = 10) -> str:
    """Wait until the broker (reloading) refuses `settings`' login; why it did."""
    async with asyncio.timeout(within_s):
        while True:
            try:
                async with settings.client(identifier="probe", timeout=5):
                    pass
            except aiomqtt.MqttError as exc:
                return str(exc)
            await asyncio.sleep(0.2)


async def test_provisioned_gateway_publishes_only_as_itself_until_revoked(
    tmp_path: Path, broker: tuple[Mosquitto, Path, Path, TestCertificates]
) -> None:
    mosquitto, passwd, acl, certs = broker
    files = ["--password-file", str(passwd), "--acl-file", str(acl)]
    for gw in ("gw1", "gw2"):
        out = kilowatch(
            "collector", "provision-gateway", "s1", gw, "--broker-host", "localhost",
            "--broker-port", str(mosquitto.port), "--out", str(tmp_path / f"{gw}.yaml"), *files,
        )  # fmt: skip
        assert "sudo systemctl reload mosquitto" in out
    assert (tmp_path / "gw1.yaml").stat().st_mode & 0o777 == 0o600
    assert "s1.gw1:$7$" in passwd.read_text()  # hashed by mosquitto_passwd (PBKDF2-SHA512)
    assert "user s1.gw1\ntopic write kilowatch/v1/s1/gw1/#\n" in acl.read_text()
    reload(mosquitto)
    gw1 = gateway_settings(tmp_path / "gw1.yaml", certs.ca)
    gw2 = gateway_settings(tmp_path / "gw2.yaml", certs.ca)
    assert (gw1.username, gw1.port) == ("s1.gw1", mosquitto.port)
    await logs_in(gw1)

    watcher = BrokerSettings(
        host="localhost", port=mosquitto.port, username=WATCHER, password=WATCHER_PW, tls=gw1.tls
    )
    async with watcher.client(identifier=WATCHER, timeout=10) as sub:
        await sub.subscribe("kilowatch/v1/#", qos=1)
        async with gw1.client(identifier="s1.gw1", timeout=10) as one:
            await one.publish("kilowatch/v1/s1/gw2/readings", b"impostor", qos=1)  # dropped by the ACL
            # gw2 asking for gw1's client id gets its own user name as client id: gw1 stays connected.
            async with gw2.client(identifier="s1.gw1", timeout=10) as two:
                await two.publish("kilowatch/v1/s1/gw1/readings", b"impostor", qos=1)  # dropped too
                await two.publish("kilowatch/v1/s1/gw2/readings", b"gw2 own", qos=1)
            await one.publish("kilowatch/v1/s1/gw1/readings", b"gw1 own", qos=1)
        received = []
        async with asyncio.timeout(15):
            async for message in sub.messages:
                received.append((str(message.topic), message.payload))
                if len(received) == 2:
                    break
    assert received == [
        ("kilowatch/v1/s1/gw2/readings", b"gw2 own"),
        ("kilowatch/v1/s1/gw1/readings", b"gw1 own"),
    ]

    out = kilowatch("collector", "revoke-gateway", "s1", "gw1", *files)
    assert "removed" in out
    assert "s1.gw1" not in passwd.read_text() + acl.read_text()
    assert "user s1.gw2" in acl.read_text()
    reload(mosquitto)
    assert re.search(r"Not authorized|Bad user name or password", await refused(gw1))
    await logs_in(gw2)  # the others still get in
