"""Ingestion against a real Mosquitto: valid batches are stored, malformed ones rejected, kept and counted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from app.processes import Mosquitto, Process, free_port, port_open, require_binary, wait_until
from collector.config import MqttSettings
from collector.ingest import Ingestor
from collector.metrics import CollectorMetrics, RejectReason
from collector.store import Ledger
from kilowatch.mqtt_contract import SCHEMA_VERSION, Channel, GatewayState, GatewayStatus, ReadingsBatch, topic
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt
from tests.services import eventually

pytestmark = pytest.mark.services

READINGS = topic("site1", "gw1", Channel.READINGS)


@dataclass
class Running:
    ingestor: Ingestor
    ledger: Ledger
    metrics: CollectorMetrics

    def stored(self, meter: str = "m1") -> int:
        with self.ledger.reader() as r:
            return len(r.readings(meter, 0, 2**62))

    def rejected_count(self, reason: RejectReason) -> float:
        value = self.metrics.registry.get_sample_value(
            "kilowatch_collector_rejected_messages_total", {"reason": reason.value}
        )
        return value or 0.0


@pytest.fixture
async def start_ingestor(ledger_at: LedgerAt) -> AsyncIterator[Callable[[str, int], Running]]:
    """Starts an ingestor (fast reconnects) on a fresh ledger; stops it before any broker fixture stops."""
    started: list[tuple[Running, asyncio.Task[None]]] = []

    def start(host: str, port: int) -> Running:
        ledger = Ledger(ledger_at("ledger"))
        metrics = CollectorMetrics()
        ingestor = Ingestor(
            settings=MqttSettings(
                host=host, port=port, client_id="test-collector", reconnect_min_s=0.1, reconnect_max_s=0.5
            ),
            ledger=ledger,
            metrics=metrics,
        )
        running = Running(ingestor, ledger, metrics)
        started.append((running, asyncio.create_task(ingestor.run(), name="test-ingest")))
        return running

    yield start
    for running, task in started:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        running.ledger.close()


async def publish(mosquitto: Mosquitto, name: str, message: ReadingsBatch | GatewayStatus) -> None:
    """Publish like an agent does: aiomqtt, QoS 1."""
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-agent") as client:
        await client.publish(name, message.model_dump_json(), qos=1)


def with_values(values: dict[str, float], **overrides: object) -> bytes:
    """A readings batch as JSON, with raw values and top-level overrides the model would refuse."""
    data = json.loads(batch(reading(at(11), imp=1.0)).model_dump_json())
    data["readings"][0]["values"] = values
    data.update(overrides)
    return json.dumps(data).encode()


MALFORMED: list[tuple[str, bytes, RejectReason]] = [
    (READINGS, b"\xff\xfe\x00 not json at all \x80", RejectReason.INVALID_JSON),
    (READINGS, b'{"schema_version": 1, "readings": [', RejectReason.INVALID_JSON),
    (READINGS, b'["MARKER-wrong-shape", 1, 2]', RejectReason.INVALID_SCHEMA),
    (
        READINGS,
        b'{"schema_version": 1, "site": "site1", "gateway": "MARKER not an id"}',
        RejectReason.INVALID_SCHEMA,
    ),
    (READINGS, with_values({"bogus_quantity_w": 5.0}), RejectReason.INVALID_SCHEMA),
    (
        READINGS,
        with_values({"energy_import_kwh": 1.0}, schema_version=2),
        RejectReason.UNSUPPORTED_SCHEMA_VERSION,
    ),
    (
        topic("site1", "gw2", Channel.READINGS),
        with_values({"energy_import_kwh": 1.0}),
        RejectReason.TOPIC_MISMATCH,
    ),
    ("kilowatch/v1/SITE1/gw1/readings", with_values({"energy_import_kwh": 1.0}), RejectReason.BAD_TOPIC),
    (topic("site1", "gw1", Channel.STATUS), b"offline", RejectReason.INVALID_JSON),
]


async def test_malformed_messages_are_rejected_kept_and_counted_while_valid_ones_flow(
    mosquitto: Mosquitto, start_ingestor: Callable[[str, int], Running], caplog: pytest.LogCaptureFixture
) -> None:
    running = start_ingestor(mosquitto.host, mosquitto.port)
    caplog.set_level(logging.INFO, logger="collector")
    await eventually(lambda: running.ingestor.connected, "the ingestor to connect")
    first = batch(
        reading(at(10, 0), imp=100.0, power_w=4000), reading(at(10, 0), meter="m2", power_w=10), seq=1
    )
    await publish(mosquitto, READINGS, first)
    await eventually(lambda: running.stored() == 1, "the first batch in the ledger")

    for name, payload, _ in MALFORMED:
        await asyncio.to_thread(mosquitto.publish, name, payload)  # the real mosquitto_pub
    after = batch(reading(at(10, 15), imp=101.0, power_w=5000), seq=2)
    await publish(mosquitto, READINGS, after)
    await publish(mosquitto, READINGS, after)  # a resend: stored once, skipped whole by its seq
    await eventually(lambda: running.stored() == 2, "the batch published after the bad ones")
    await eventually(
        lambda: running.metrics.registry.get_sample_value("kilowatch_collector_batches_duplicate_total") == 1,
        "the resend to be counted as a duplicate batch",
    )

    for reason in RejectReason:
        expected = sum(1 for _, _, r in MALFORMED if r is reason)
        assert running.rejected_count(reason) == expected, reason
    with running.ledger.reader() as r:
        rejected = list(reversed(r.rejected()))
        intervals = r.intervals("m1", at(10), at(11))
    assert [(row.topic, row.payload, row.reason) for row in rejected] == [
        (name, payload, reason.value) for name, payload, reason in MALFORMED
    ]
    assert all(row.detail for row in rejected)
    assert [i.energy_import_kwh for i in intervals] == [1.0, None]
    assert running.metrics.registry.get_sample_value("kilowatch_collector_readings_accepted_total") == 3
    assert running.metrics.registry.get_sample_value("kilowatch_collector_readings_duplicate_total") == 1

    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    for _, _, reason in MALFORMED:
        assert any(reason.value in w for w in warnings), reason
    assert "MARKER" not in caplog.text  # reasons, never payloads


async def test_a_gateway_status_is_kept(
    mosquitto: Mosquitto, start_ingestor: Callable[[str, int], Running]
) -> None:
    running = start_ingestor(mosquitto.host, mosquitto.port)
    await eventually(lambda: running.ingestor.connected, "the ingestor to connect")
    status = GatewayStatus(
        schema_version=SCHEMA_VERSION,
        site="site1",
        gateway="gw1",
        state=GatewayState.ONLINE,
        ts=at(9),
        agent_version="0.1.0",
        meters=["m1", "m2"],
    )
    await publish(mosquitto, topic("site1", "gw1", Channel.STATUS), status)

    def gateways() -> list[tuple[str, str, list[str]]]:
        with running.ledger.reader() as r:
            return [(g.gateway, g.state, g.meters) for g in r.gateways()]

    assert await eventually(gateways, "the status in the ledger") == [("gw1", "online", ["m1", "m2"])]


@dataclass
class LateBroker:
    """A Mosquitto on a port chosen before it runs, started and stopped by the test."""

    port: int
    workdir: Path
    broker: Mosquitto | None = None

    def start(self) -> Mosquitto:
        conf = self.workdir / "late.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        process = Process(
            "mosquitto", [require_binary("mosquitto"), "-c", str(conf)], self.workdir / "late.log"
        )
        self.broker = Mosquitto("127.0.0.1", self.port, process.start())
        wait_until(lambda: port_open("127.0.0.1", self.port), 10, "the late mosquitto to listen")
        return self.broker

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()


@pytest.fixture
def late_broker(tmp_path: Path) -> Iterator[LateBroker]:
    late = LateBroker(free_port(), tmp_path)
    yield late
    late.stop()


async def test_starts_without_a_broker_and_reconnects_after_it_restarts(
    late_broker: LateBroker, start_ingestor: Callable[[str, int], Running]
) -> None:
    running = start_ingestor("127.0.0.1", late_broker.port)
    await asyncio.sleep(0.5)  # a few refused connection attempts
    assert not running.ingestor.connected
    assert running.metrics.registry.get_sample_value("kilowatch_collector_mqtt_connected") == 0

    broker = await asyncio.to_thread(late_broker.start)
    await eventually(lambda: running.ingestor.connected, "the ingestor to connect to the late broker")
    await publish(broker, READINGS, batch(reading(at(10), imp=1.0)))
    await eventually(lambda: running.stored() == 1, "a reading through the late broker")

    late_broker.stop()
    await eventually(lambda: not running.ingestor.connected, "the ingestor to notice the broker is gone")
    broker = await asyncio.to_thread(late_broker.start)
    await eventually(lambda: running.ingestor.connected, "the ingestor to reconnect")
    await publish(broker, READINGS, batch(reading(at(10, 5), imp=2.0)))
    await eventually(lambda: running.stored() == 2, "a reading after the reconnect")
