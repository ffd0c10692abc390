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
from app.provision import SiteCa, hashed_entry, issue_client_certificate
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


def gateway_settings(
    agent_yaml: Path, ca: Path, cert: Path | None = None, key: Path | None = None
) -> BrokerSettings:
    """The broker settings of a provisioned agent.yaml, with the test files where the gateway keeps its own."""
    data = yaml.safe_load(agent_yaml.read_text())
    data["mqtt"]["tls"] = {"ca_file": str(ca)} | (
        {"cert_file": str(cert), "key_file": str(key)} if cert and key else {}
    )
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


async def test_client_certificate_from_the_site_ca(tmp_path: Path) -> None:
    """With the site CA, the gateway also gets a client certificate; a broker that demands one lets it in,
    and refuses the same login with no certificate, with one from another CA or with an expired one."""
    certs = TestCertificates.generate(tmp_path / "pki")
    passwd, acl = tmp_path / "kilowatch.passwd", tmp_path / "kilowatch.acl"
    passwd.write_text("")
    acl.write_text("")
    mosquitto = Mosquitto.start(
        tmp_path / "mosquitto",
        extra_conf=f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\nuse_username_as_clientid true\n",
        tls=TlsListener(certs.ca, certs.server_cert, certs.server_key, require_certificate=True),
    )
    try:
        files = ["--password-file", str(passwd), "--acl-file", str(acl)]
        for gw, ca in (("gw1", "ca"), ("gw2", "other-ca")):
            out = kilowatch(
                "collector", "provision-gateway", "s1", gw, "--broker-host", "localhost",
                "--broker-port", str(mosquitto.port), "--out", str(tmp_path / f"{gw}.yaml"), *files,
                "--client-ca-cert", str(certs.folder / f"{ca}.pem"), "--client-ca-key", str(certs.folder / f"{ca}.key"),
            )  # fmt: skip
            assert f"client certificate {tmp_path / gw}.pem" in out
        assert (tmp_path / "gw1.key").stat().st_mode & 0o777 == 0o600
        written = yaml.safe_load((tmp_path / "gw1.yaml").read_text())["mqtt"]["tls"]
        assert written == {
            "ca_file": "/etc/kilowatch/ca.pem",
            "cert_file": "/etc/kilowatch/client.pem",
            "key_file": "/etc/kilowatch/client.key",
        }
        reload(mosquitto)
        gw1 = gateway_settings(tmp_path / "gw1.yaml", certs.ca, tmp_path / "gw1.pem", tmp_path / "gw1.key")
        await logs_in(gw1)
        async with gw1.client(identifier="s1.gw1", timeout=10) as client:
            await client.publish("kilowatch/v1/s1/gw1/readings", b"over mutual TLS", qos=1)

        bare = gateway_settings(tmp_path / "gw1.yaml", certs.ca)  # the login, without the certificate
        assert "certificate required" in await refused(bare)
        other = gateway_settings(tmp_path / "gw2.yaml", certs.ca, tmp_path / "gw2.pem", tmp_path / "gw2.key")
        assert "unknown ca" in (await refused(other)).lower()

        expired = issue_client_certificate("s1.gw1", SiteCa(certs.ca, certs.folder / "ca.key"), days=0)
        (tmp_path / "expired.pem").write_bytes(expired.cert_pem)
        (tmp_path / "expired.key").write_bytes(expired.key_pem)
        await asyncio.sleep(1)
        stale = gateway_settings(
            tmp_path / "gw1.yaml", certs.ca, tmp_path / "expired.pem", tmp_path / "expired.key"
        )
        assert "certificate expired" in (await refused(stale)).lower()
    finally:
        mosquitto.stop()
