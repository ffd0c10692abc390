"""The publisher against a real Mosquitto: birth and offline status with the spool's state, ordered
batches named by spool and seq, a broker that is away, credentials. (Durability: test_agent_spool.)"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from agent.clock import now_ms
from agent.config import MqttSettings
from agent.publisher import Publisher
from app.processes import Mosquitto, free_port, require_binary
from kilowatch.mqtt_contract import (
    Channel,
    ClockState,
    GatewayState,
    GatewayStatus,
    Quality,
    Reading,
    ReadingsBatch,
    topic,
)
from tests.agent_support import payload
from tests.paths import REPO
from tests.services import eventually

pytestmark = pytest.mark.services

STATUS = topic("s1", "g1", Channel.STATUS)
USER = "agent"
PASSWORD = "s3cret-pw"  # noqa: S105 - a throwaway broker's test password
WRONG = "wrong-pw"
READINGS = topic("s1", "g1", Channel.READINGS)


SCHEMA = REPO / "docs" / "mqtt" / "readings-batch.schema.json"


def reading(n: int) -> Reading:
    return Reading(
        meter="m1",
        profile="eastron-sdm630",
        ts=1_700_000_000_000 + n,
        values={"active_power_w": float(n)},
        quality=Quality.GOOD,
        clock=ClockState.SYNCED,
    )


@asynccontextmanager
async def subscriber(broker: Mosquitto, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for name in topics:
            await client.subscribe(name, qos=1)
        yield client


async def receive(client: aiomqtt.Client, count: int, within: float = 15) -> list[aiomqtt.Message]:
    messages: list[aiomqtt.Message] = []
    async with asyncio.timeout(within):
        async for message in client.messages:
            messages.append(message)
            if len(messages) == count:
                return messages
    raise AssertionError("unreachable")


def status_of(message: aiomqtt.Message) -> GatewayStatus:
    return GatewayStatus.model_validate_json(payload(message))


async def test_birth_batches_in_order_and_offline_on_close(mosquitto: Mosquitto) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port)
    async with subscriber(mosquitto, READINGS, STATUS) as sub:
        async with Publisher(settings, site="s1", gateway="g1", meters=["m1"]) as publisher:
            first = publisher.submit([reading(1)])
            publisher.submit([reading(2), reading(3)])
            submitted = now_ms()
            birth, *batches = await receive(sub, 3)
            async with subscriber(mosquitto, STATUS) as late:  # the birth message is retained
                [retained] = await receive(late, 1)
        [offline] = await receive(sub, 1)

    assert (str(birth.topic), status_of(birth).state, status_of(birth).meters) == (
        STATUS,
        GatewayState.ONLINE,
        ["m1"],
    )
    assert retained.retain
    assert status_of(retained).state is GatewayState.ONLINE
    received = [ReadingsBatch.model_validate_json(payload(m)) for m in batches]
    assert all(str(m.topic) == READINGS for m in batches)
    assert all(m.qos == 1 for m in batches)
    assert status_of(birth).spool is not None
    assert [b.seq for b in received] == [first, 1] == [0, 1]
    assert {b.spool_id for b in received} == {publisher.spool.spool_id}
    assert [len(b.readings) for b in received] == [1, 2]
    assert received[1].readings[1] == reading(3)
    assert received[0].sent_at >= submitted
    assert (str(offline.topic), status_of(offline).state) == (STATUS, GatewayState.OFFLINE)
    assert (publisher.published, publisher.pending) == (2, 0)


async def test_no_broker_keeps_batches_in_the_spool_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = MqttSettings(port=free_port(), reconnect_min_s=30, reconnect_max_s=30)  # nobody listens
    async with Publisher(settings, site="s1", gateway="g1", flush_timeout_s=0.1) as publisher:
        assert [publisher.submit([reading(n)]) for n in range(5)] == [0, 1, 2, 3, 4]
        await eventually(lambda: "unavailable" in caplog.text, "a failed connection attempt")
        assert (publisher.pending, publisher.connected) == (5, False)
    assert "stopped with 5 batches in the spool, sent after the next start" in caplog.text


async def test_a_broker_gone_mid_session_is_unavailable_not_a_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A publish on the lost connection fails with paho's "not connected" (code 4, as CONNACK's bad
    credentials in MQTT 3.1.1): the log must say the broker is away, not blame the password."""
    caplog.set_level(logging.INFO)
    broker = Mosquitto.start(tmp_path / "broker")
    settings = MqttSettings(port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.1)
    try:
        async with Publisher(settings, site="s1", gateway="g1", flush_timeout_s=0.1) as publisher:
            await eventually(lambda: publisher.connected, "the publisher to connect")
            broker.stop()
            publisher.submit([reading(1)])
            await eventually(lambda: "unavailable" in caplog.text, "the lost broker to be noticed")
            assert publisher.pending == 1
    finally:
        broker.stop()
    assert "refused our credentials" not in caplog.text


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto that only lets USER in with PASSWORD."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        [require_binary("mosquitto_passwd"), "-c", "-b", str(passwords), USER, PASSWORD], check=True
    )
    # `user root` keeps a root-started Mosquitto able to read the file (it has no effect otherwise).
    conf = f"allow_anonymous false\nuser root\npassword_file {passwords}"
    broker = Mosquitto.start(tmp_path / "broker", extra_conf=conf)
    yield broker
    broker.stop()


async def test_credentials_work_and_are_never_logged(
    auth_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = auth_broker.port
    wrong = MqttSettings.model_validate(
        {"port": port, "username": USER, "password": WRONG, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1}
    )
    async with Publisher(wrong, site="s1", gateway="g1", flush_timeout_s=0.1) as refused:
        await eventually(lambda: "Not authorized" in caplog.text, "the broker to refuse the password", 10)
        assert "refused our credentials" in caplog.text
        assert not refused.connected
    right = MqttSettings.model_validate({"port": port, "username": USER, "password": PASSWORD})
    async with aiomqtt.Client(auth_broker.host, port, username=USER, password=PASSWORD) as sub:
        await sub.subscribe(READINGS, qos=1)
        async with Publisher(right, site="s1", gateway="g1") as publisher:
            publisher.submit([reading(1)])
            [message] = await receive(sub, 1)
    assert ReadingsBatch.model_validate_json(payload(message)).seq == 0
    assert PASSWORD not in caplog.text
    assert WRONG not in caplog.text


async def test_a_batch_spooled_by_this_process_goes_out_as_stored_and_fits_the_published_schema(
    tmp_path: Path,
) -> None:
    """The hot path sends the spooled readings in their envelope without model objects: the result is
    the same message the models would make, and it validates against docs/mqtt's JSON Schema, with a
    meter not read at all as one error reading and float32 values at their own precision."""
    import json

    import jsonschema

    from agent.config import SpoolSettings
    from agent.poller import Poll, to_reading
    from agent.spool import Spool
    from kilowatch.mqtt_contract import ClockState, ReadingsBatch
    from kilowatch.profiles import load_builtin

    sdm = load_builtin("eastron-sdm630")
    spool = Spool(SpoolSettings(path=tmp_path / "spool.db"), boot_id=None)
    try:
        publisher = Publisher(MqttSettings(host="127.0.0.1"), site="s1", gateway="g1", spool=spool)
        good = Poll(ts=now_ms(), values={"voltage_l1_v": 221.964, "frequency_hz": 50.0})
        readings = [
            to_reading(good, sdm, "m1", ClockState.SYNCED),
            to_reading(Poll.unread(sdm, "no answer"), sdm, "m2", ClockState.SYNCED),
        ]
        spool.append(readings)
        await spool.flush()
        [batch], _ = await spool.read(-1)
        sent = publisher._batch_message(batch)
    finally:
        spool.close()
    doc = json.loads(sent)
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(doc, schema)
    assert b'"voltage_l1_v":221.964' in sent
    assert doc["readings"][1] | {"ts": 0, "mono_ms": 0} == {
        "meter": "m2", "profile": "eastron-sdm630", "ts": 0, "values": {}, "quality": "error",
        "value_quality": {}, "value_reasons": {}, "clock": "synced", "mono_ms": 0,
    }  # fmt: skip
    assert ReadingsBatch.model_validate_json(sent).readings == readings
