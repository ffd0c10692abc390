"""deploy/mosquitto.conf, run by the real Mosquitto: logins, ACL, and a queue that outlives the collector's
absence and a broker restart.

The file is used as it is, except for what a test cannot use: the listener ports (free loopback ports),
the folders (/etc/mosquitto/ and /var/lib/mosquitto/ become test folders), the account (root cannot switch
to `mosquitto` and still read a pytest folder) and the certificates (made by openssl at test time).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.processes import Mosquitto, free_port, require_binary
from kilowatch.broker import BrokerSettings, TlsSettings
from tests.paths import REPO
from tests.services import TestCertificates

pytestmark = pytest.mark.services

DEPLOY = REPO / "deploy"
CONF = DEPLOY / "mosquitto.conf"
ACL = DEPLOY / "mosquitto" / "kilowatch.acl"

COLLECTOR, GATEWAY = "kilowatch-collector", "hanoi-office.gw-01"  # users of the example ACL
OWN_TOPIC = "kilowatch/v1/hanoi-office/gw-01/readings"
OWN_STATUS = "kilowatch/v1/hanoi-office/gw-01/status"
OTHER_TOPIC = "kilowatch/v1/hanoi-office/gw-02/readings"
PASSWORDS = {COLLECTOR: "collector-pw", GATEWAY: "gateway-pw"}
WRONG_PASSWORD = PASSWORDS[GATEWAY][::-1]
QUEUED = 3000  # three times Mosquitto's default max_queued_messages


@dataclass
class Deployed:
    broker: Mosquitto  # .port is the loopback plain listener
    tls_port: int
    certs: TestCertificates

    def gateway(self, password: str = PASSWORDS[GATEWAY]) -> BrokerSettings:
        """The agent's view: TLS listener, its own login."""
        tls = TlsSettings(ca_file=self.certs.ca)
        return BrokerSettings(port=self.tls_port, tls=tls, username=GATEWAY, password=password)

    def collector(self, *, session: bool = True) -> aiomqtt.Client:
        """The collector's view: loopback listener, MQTT 5 persistent session, QoS 1."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        properties.SessionExpiryInterval = 3600
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=COLLECTOR,
            password=PASSWORDS[COLLECTOR],
            identifier="kilowatch-collector",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not session,
            properties=properties,
            timeout=10,
        )


def production_conf(workdir: Path, *, drop: tuple[str, ...] = ()) -> tuple[str, int, int]:
    """deploy/mosquitto.conf for a test: (text, plain port, TLS port); options named in `drop` removed."""
    text, count = re.subn(r"/etc/mosquitto/", f"{workdir / 'etc'}/", CONF.read_text())
    assert count >= 1, f"{CONF.name} no longer names /etc/mosquitto/: update this test"
    text, plain, tls = runnable_conf(text, workdir)
    for option in drop:
        text, count = re.subn(rf"^{option} .*\n", "", text, flags=re.MULTILINE)
        assert count >= 1, option  # a listener option is in every listener block
    return text, plain, tls


def runnable_conf(text: str, workdir: Path) -> tuple[str, int, int]:
    """A production configuration a test can run: (text, plain port, TLS port) with free loopback ports, the
    persistence in `workdir`, and the broker staying root (it cannot read a pytest folder as `mosquitto`)."""
    plain, tls = free_port(), free_port()
    swaps = [
        (r"^listener 8883$", f"listener {tls} 127.0.0.1"),
        (r"^listener 1883 127\.0\.0\.1$", f"listener {plain} 127.0.0.1"),
        (r"^user mosquitto$", "user root"),
        (r"/var/lib/mosquitto/", f"{workdir / 'var'}/"),
    ]
    for pattern, replacement in swaps:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count >= 1, f"the configuration no longer has {pattern!r}: update this test"
    return text, plain, tls


def deploy(workdir: Path, certs: TestCertificates, *, drop: tuple[str, ...] = ()) -> Deployed:
    """Lay out /etc/mosquitto and /var/lib/mosquitto as the file expects them, and start the broker."""
    etc = workdir / "etc"
    (etc / "certs").mkdir(parents=True)
    (workdir / "var").mkdir()
    shutil.copy(certs.ca, etc / "certs" / "ca.pem")
    shutil.copy(certs.server_cert, etc / "certs" / "broker.pem")
    shutil.copy(certs.server_key, etc / "certs" / "broker.key")
    shutil.copy(ACL, etc / "kilowatch.acl")
    passwd = require_binary("mosquitto_passwd")
    for i, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [passwd, "-b", *create, str(etc / "kilowatch.passwd"), user, password], check=True, timeout=30
        )
    text, plain, tls = production_conf(workdir, drop=drop)
    return Deployed(Mosquitto.run(workdir, text, plain), tls, certs)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def deployed(tmp_path: Path, certs: TestCertificates) -> Iterator[Deployed]:
    d = deploy(tmp_path / "broker", certs)
    yield d
    d.broker.stop()


def test_the_file_uses_only_options_this_mosquitto_accepts(deployed: Deployed) -> None:
    log = deployed.broker.process.log()
    assert "running" in log
    assert "Error" not in log, log
    assert "Warning" not in log.replace("Warning: Mosquitto should not be run as root", ""), log
    # Only the two listeners of the file: a listener option set outside a listener block opens a
    # default listener on port 1883, on every interface.
    opened = set(re.findall(r"Opening ipv4 listen socket on port (\d+)", log))
    assert opened == {str(deployed.broker.port), str(deployed.tls_port)}, log


async def test_logins_and_the_acl(deployed: Deployed) -> None:
    with pytest.raises(aiomqtt.MqttError, match=r"\[code:135\] Not authorized"):
        async with aiomqtt.Client(deployed.broker.host, deployed.broker.port, timeout=10):
            pass  # anonymous
    with pytest.raises(aiomqtt.MqttError, match=r"\[code:135\] Not authorized"):
        async with deployed.gateway(password=WRONG_PASSWORD).client(identifier="gw", timeout=10):
            pass
    async with deployed.collector(session=False) as collector:
        await collector.subscribe("kilowatch/v1/#", qos=1)
        async with deployed.gateway().client(identifier="gw", timeout=10) as gateway:
            # Published first, never delivered: the ACL lets gw-01 write only its own topics.
            await gateway.publish(OTHER_TOPIC, b"impostor", qos=1)
            await gateway.publish(OWN_TOPIC, b"own", qos=1)
        async with asyncio.timeout(15):
            message = await anext(aiter(collector.messages))
    assert (str(message.topic), message.payload) == (OWN_TOPIC, b"own")


async def test_a_gateway_that_guesses_the_collectors_share_group_takes_messages_from_them(
    deployed: Deployed,
) -> None:
    """Why replicas' share group must be a secret (collector.config.SHARE_GROUP): Mosquitto 2.0 lets any login
    join a shared subscription, and a message it then hands to a member the ACL keeps it from is dropped. A
    gateway in the group of a guessable name (with the subscriptions the README documents) takes a share of
    the collectors' messages away; the group of a secret name gets every one."""
    guessed, secret = "kilowatch", secrets.token_hex(16)
    async with deployed.collector(session=False) as collector:
        await collector.subscribe(f"$share/{secret}/kilowatch/v1/+/+/readings", qos=1)
        await collector.subscribe(f"$share/{guessed}/kilowatch/v1/+/+/status", qos=1)
        async with deployed.gateway().client(identifier="gw", timeout=10) as gateway:
            for channel in ("readings", "status"):
                await gateway.subscribe(f"$share/{guessed}/kilowatch/v1/+/+/{channel}", qos=1)  # granted
            for i in range(10):
                await gateway.publish(OWN_TOPIC, str(i).encode(), qos=1)
                await gateway.publish(OWN_STATUS, str(i).encode(), qos=1)
            got: dict[str, list[bytes]] = {OWN_TOPIC: [], OWN_STATUS: []}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    async for message in collector.messages:
                        assert isinstance(message.payload, bytes)
                        got[str(message.topic)].append(message.payload)
    assert got[OWN_TOPIC] == [str(i).encode() for i in range(10)]
    assert len(got[OWN_STATUS]) < 10  # the broker gave the rest to the gateway, which may not read them


async def offline_collector_gets(deployed: Deployed, *, restart: bool) -> list[int]:
    """The collector's persistent session subscribes and goes away; the gateway publishes QUEUED QoS 1
    messages (and the broker restarts when asked); the collector comes back. What it gets, up to a final
    marker the gateway publishes only after it has reconnected (the broker delivers the queue first)."""
    async with deployed.collector() as collector:
        await collector.subscribe("kilowatch/v1/#", qos=1)
    async with deployed.gateway().client(identifier="gw", timeout=30) as gateway:
        for start in range(0, QUEUED, 100):
            await asyncio.gather(
                *(gateway.publish(OWN_TOPIC, str(i).encode(), qos=1) for i in range(start, start + 100))
            )
    if restart:
        deployed.broker.stop()  # SIGTERM: Mosquitto writes its snapshot
        deployed.broker.restart()
    received: list[int] = []
    async with deployed.collector() as collector:
        async with deployed.gateway().client(identifier="gw", timeout=30) as gateway:
            await gateway.publish(OWN_TOPIC, b"end", qos=1)
        async with asyncio.timeout(60):
            async for message in collector.messages:
                if message.payload == b"end":
                    break
                assert isinstance(message.payload, bytes)
                received.append(int(message.payload))
    return received


async def test_an_offline_collector_gets_every_queued_message_across_a_broker_restart(
    deployed: Deployed, tmp_path: Path, certs: TestCertificates
) -> None:
    assert await offline_collector_gets(deployed, restart=True) == list(range(QUEUED))
    assert "Saving in-memory database" in deployed.broker.process.log()

    # The contrast, same file, same scenario, without max_queued_messages: Mosquitto's default of 1000
    # queued messages drops the rest, silently (the gateway got a PUBACK for every one).
    defaults = deploy(tmp_path / "defaults", certs, drop=("max_queued_messages",))
    try:
        received = await offline_collector_gets(defaults, restart=True)
    finally:
        defaults.broker.stop()
    assert received == list(range(1000))


async def taken_over_collector_gets(deployed: Deployed, count: int) -> list[int]:
    """The collector's session subscribes and goes away; the gateway publishes `count` QoS 1 messages;
    then the gateway's credentials connect with the collector's client id and a clean start (which
    discards that session's queue if the broker lets them have it); the collector comes back. What it
    gets, up to a final marker published after it is back."""
    async with deployed.collector() as collector:
        await collector.subscribe("kilowatch/v1/#", qos=1)
    async with deployed.gateway().client(identifier="gw", timeout=10) as gateway:
        for i in range(count):
            await gateway.publish(OWN_TOPIC, str(i).encode(), qos=1)
    async with deployed.gateway().client(identifier=COLLECTOR, timeout=10):
        pass  # MQTT 5 clean start, session expiry 0: the impostor's session, queue and all, is gone
    received: list[int] = []
    async with deployed.collector() as collector:
        await collector.subscribe("kilowatch/v1/#", qos=1)  # as the collector does at every connect
        async with deployed.gateway().client(identifier="gw", timeout=10) as gateway:
            await gateway.publish(OWN_TOPIC, b"end", qos=1)
        async with asyncio.timeout(30):
            async for message in collector.messages:
                if message.payload == b"end":
                    break
                assert isinstance(message.payload, bytes)
                received.append(int(message.payload))
    return received


async def test_a_gateway_cannot_take_over_the_collectors_session(
    deployed: Deployed, tmp_path: Path, certs: TestCertificates
) -> None:
    """Issue 16, finding 2: with 20 batches queued for the collector, 0 reached it after the takeover."""
    assert await taken_over_collector_gets(deployed, 20) == list(range(20))

    # The contrast, same file without use_username_as_clientid: the queue is lost, silently.
    open_ids = deploy(tmp_path / "open-ids", certs, drop=("use_username_as_clientid",))
    try:
        assert await taken_over_collector_gets(open_ids, 20) == []
    finally:
        open_ids.broker.stop()


async def test_an_oversized_packet_is_refused_and_the_sender_disconnected(deployed: Deployed) -> None:
    limit = int(re.search(r"^max_packet_size (\d+)$", CONF.read_text(), re.MULTILINE)[1])  # type: ignore[index]
    async with deployed.collector(session=False) as collector:
        await collector.subscribe("kilowatch/v1/#", qos=1)
        with pytest.raises(aiomqtt.MqttError):
            async with deployed.gateway().client(identifier="gw", timeout=10) as gateway:
                await gateway.publish(OWN_TOPIC, b"x" * limit, qos=1)
        async with deployed.gateway().client(identifier="gw", timeout=10) as gateway:
            await gateway.publish(OWN_TOPIC, b"y" * (limit // 2), qos=1)  # a large legitimate one passes
        async with asyncio.timeout(15):
            message = await anext(aiter(collector.messages))
    assert message.payload == b"y" * (limit // 2)
