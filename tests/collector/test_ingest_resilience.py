"""The ingest loop never dies on a message, and what a gateway sends costs bounded storage: against a real
Mosquitto, a message whose storing fails (an OverflowError, retained status included) is dead-lettered and
the rest goes on; oversize payloads, floods of garbage, new meter ids and refused messages stay within their
limits."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import aiomqtt
import pytest

from app.processes import Mosquitto
from collector.config import LimitsSettings, MqttSettings
from collector.ingest import Ingestor
from collector.metrics import CollectorMetrics, RejectReason
from collector.store import Ledger, QuarantineReason, ReadingRejection, RejectedLimits, RejectedMessage
from collector.store import gateways as gateway_store
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    Channel,
    ClockAnchor,
    ClockState,
    GatewayEvent,
    GatewayEventKind,
    GatewayState,
    GatewayStatus,
    Reading,
    topic,
)
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt
from tests.paths import REPO
from tests.services import eventually

READINGS = topic("site1", "gw1", Channel.READINGS)
STATUS = topic("site1", "gw1", Channel.STATUS)
EVENTS = topic("site1", "gw1", Channel.EVENTS)


class Running:
    def __init__(self, ingestor: Ingestor, ledger: Ledger, metrics: CollectorMetrics) -> None:
        self.ingestor, self.ledger, self.metrics = ingestor, ledger, metrics

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def rejected(self, reason: RejectReason) -> float:
        return self.sample("kilowatch_collector_rejected_messages_total", reason=reason.value)

    def stored(self, meter: str = "m1") -> int:
        with self.ledger.reader() as r:
            return len(r.readings(meter, 0, 2**62))

    def kept(self) -> list[tuple[str, str]]:
        with self.ledger.reader() as r:
            return [(row.reason, row.detail) for row in reversed(r.rejected(limit=100_000))]


@pytest.fixture
async def start(ledger_at: LedgerAt) -> AsyncIterator[Callable[..., Running]]:
    """Starts an ingestor on a fresh ledger; stops it (and closes the ledger) at the end."""
    started: list[tuple[Running, asyncio.Task[None]]] = []

    def run(
        mosquitto: Mosquitto, limits: LimitsSettings | None = None, ledger: Ledger | None = None
    ) -> Running:
        ledger = ledger or Ledger(ledger_at("ledger"))
        metrics = CollectorMetrics()
        settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id="resilience-test")
        ingestor = Ingestor(
            settings=settings, ledger=ledger, metrics=metrics, limits=limits or LimitsSettings()
        )
        running = Running(ingestor, ledger, metrics)
        started.append((running, asyncio.create_task(ingestor.run(), name="test-ingest")))
        return running

    yield run
    for running, task in started:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        running.ledger.close()


def status(state: GatewayState = GatewayState.ONLINE, ts: int = at(9)) -> GatewayStatus:
    return GatewayStatus(
        schema_version=SCHEMA_VERSION, site="site1", gateway="gw1", state=state, ts=ts, agent_version="0.1.0"
    )


@pytest.mark.services
async def test_a_message_that_cannot_be_stored_is_dead_lettered_and_the_rest_goes_on(
    mosquitto: Mosquitto, start: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status whose storing raises OverflowError (as SQLite does for an int beyond int64; not a
    sqlite3.Error), retained, so a brand-new collector with an empty ledger gets it first; valid batches
    before and after it arrive in the same groups."""
    real = gateway_store.record_status
    poisoned_ts = at(9, 13)

    def record_status(db: object, message: GatewayStatus, received_at: int) -> None:
        if message.ts == poisoned_ts:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        real(db, message, received_at)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway_store, "record_status", record_status)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="poisoner") as client:
        await client.publish(STATUS, status(ts=poisoned_ts).model_dump_json(), qos=1, retain=True)
    running = start(mosquitto)
    await eventually(
        lambda: running.rejected(RejectReason.UNPROCESSABLE) == 1, "the retained status dead-lettered"
    )

    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="agent") as client:
        for seq in range(20):
            await client.publish(
                READINGS, batch(reading(at(10, seq), imp=float(seq)), seq=seq).model_dump_json(), qos=1
            )
            if seq == 10:  # in the middle of a group
                await client.publish(STATUS, status(ts=poisoned_ts).model_dump_json(), qos=1)
        await client.publish(STATUS, status(ts=at(10)).model_dump_json(), qos=1)
    await eventually(lambda: running.stored() == 20, "every valid batch")
    await eventually(lambda: running.rejected(RejectReason.UNPROCESSABLE) == 2, "the second poisoned status")
    with running.ledger.reader() as r:
        [gateway] = r.gateways()
        assert gateway.ts == at(10)  # the good status after the poisoned one
    kept = running.kept()
    assert [reason for reason, _ in kept] == ["unprocessable", "unprocessable"]
    assert all("OverflowError" in detail for _, detail in kept)
    assert running.ingestor.connected
    assert running.sample("kilowatch_collector_ledger_writable") == 1


@pytest.mark.services
async def test_oversize_payloads_are_refused_before_parsing(
    mosquitto: Mosquitto, start: Callable[..., Running]
) -> None:
    running = start(mosquitto, LimitsSettings(max_payload_bytes=4096))
    await eventually(lambda: running.ingestor.connected, "the ingestor to connect")
    big = batch(*(reading(at(10, m), meter=f"m{m}", imp=1.0) for m in range(60)), seq=1).model_dump_json()
    assert len(big) > 4096
    small = batch(reading(at(11), imp=2.0), seq=2).model_dump_json()
    for payload in (big, "[" * 100_000, small):
        await asyncio.to_thread(mosquitto.publish, READINGS, payload)
    await eventually(lambda: running.stored() == 1, "the small batch")
    assert running.rejected(RejectReason.TOO_LARGE) == 2
    assert [reason for reason, _ in running.kept()] == ["too_large", "too_large"]


@pytest.mark.services
async def test_a_gateway_flooding_garbage_is_counted_but_only_so_much_is_kept(
    mosquitto: Mosquitto, start: Callable[..., Running]
) -> None:
    running = start(mosquitto, LimitsSettings(rejected_stored_per_minute=10))
    await eventually(lambda: running.ingestor.connected, "the ingestor to connect")
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="flooder") as client:
        for n in range(300):
            await client.publish(READINGS, f"garbage {n}".encode(), qos=1)
        await client.publish(READINGS, batch(reading(at(10), imp=1.0), seq=1).model_dump_json(), qos=1)
        other = topic("site1", "gw2", Channel.READINGS)
        await client.publish(other, b"not json either", qos=1)
    await eventually(lambda: running.stored() == 1, "the valid batch behind the flood")
    await eventually(lambda: running.rejected(RejectReason.INVALID_JSON) == 301, "every refusal counted")
    unstored = running.sample("kilowatch_collector_rejected_unstored_total")
    kept = len(running.kept())
    assert unstored + kept == 301
    # Within one minute 10 of gw1 and gw2's one; a minute boundary during the test may admit 10 more.
    assert kept in (11, 21)


@pytest.mark.services
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_text_postgresql_cannot_hold_is_dead_lettered_never_a_stall(
    mosquitto: Mosquitto, start: Callable[..., Running]
) -> None:
    """PostgreSQL's text holds no NUL character, which the contract lets an event's detail carry: psycopg
    refuses it before the server sees it. That is the message's fault, not an unwritable ledger: it is
    dead-lettered (payload kept) and the batches around it are stored; ingestion never pauses for it."""
    running = start(mosquitto)
    await eventually(lambda: running.ingestor.connected, "the ingestor to subscribe")
    event = GatewayEvent(
        schema_version=SCHEMA_VERSION, site="site1", gateway="gw1", ts=at(10), readings=0,
        kind=GatewayEventKind.SPOOL_CORRUPT, detail="recovered\x00 0 batches",
    )  # fmt: skip
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="agent") as client:
        for seq in range(10):
            await client.publish(
                READINGS, batch(reading(at(10, seq), imp=float(seq)), seq=seq).model_dump_json(), qos=1
            )
            if seq == 5:
                await client.publish(EVENTS, event.model_dump_json(), qos=1)
    await eventually(lambda: running.stored() == 10, "every valid batch")
    await eventually(lambda: running.rejected(RejectReason.UNPROCESSABLE) == 1, "the event dead-lettered")
    [(reason, detail)] = running.kept()
    assert reason == "unprocessable"
    assert "NUL" in detail
    assert running.sample("kilowatch_collector_ledger_writable") == 1


def test_meters_beyond_the_gateways_limit_are_refused_and_counted(ledger_at: LedgerAt) -> None:
    ledger = Ledger(ledger_at("ledger"), max_meters_per_gateway=3)
    first = ledger.ingest(batch(*(reading(at(10), meter=f"m{m}", imp=1.0) for m in range(5)), seq=1))
    assert (first.accepted, first.rejected_readings) == (3, {ReadingRejection.TOO_MANY_METERS: 2})
    # The admitted meters go on, the others stay out; another gateway has a limit of its own.
    again = ledger.ingest(batch(*(reading(at(10, 1), meter=f"m{m}", imp=2.0) for m in range(5)), seq=2))
    assert (again.accepted, again.duplicates, again.rejected_readings) == (
        3,
        0,
        {ReadingRejection.TOO_MANY_METERS: 2},
    )
    other = ledger.ingest(batch(reading(at(10), meter="x1", imp=1.0), gateway="gw2", seq=1))
    assert other.accepted == 1
    with ledger.reader() as r:
        assert sorted(m.meter_id for m in r.meters()) == ["m0", "m1", "m2", "x1"]
    ledger.close()
    # A restarted collector counts the gateway's meters from the ledger.
    ledger = Ledger(ledger_at("ledger"), max_meters_per_gateway=3)
    assert ledger.ingest(batch(reading(at(11), meter="m4", imp=1.0), seq=3)).accepted == 0
    assert ledger.ingest(batch(reading(at(11), meter="m1", imp=3.0), seq=4)).accepted == 1
    ledger.close()


def test_refused_messages_are_kept_within_a_byte_budget_and_a_retention(ledger_at: LedgerAt) -> None:
    day = 86_400_000
    budget = 200_000
    ledger = Ledger(ledger_at("ledger"), rejected=RejectedLimits(max_bytes=budget, retention_ms=2 * day))
    payload = b"x" * 10_000  # 4 KiB of it is kept
    for n in range(200):
        ledger.store([RejectedMessage(READINGS, "invalid_json", f"#{n}", payload)], received_at=at(0) + n)
    with ledger.reader() as r:
        rows = r.rejected(limit=1000)
    weight = sum(len(row.payload) + len(row.detail) + len(row.topic) for row in rows)
    assert weight <= budget
    assert all(row.payload_size == 10_000 and len(row.payload) == 4096 for row in rows)
    assert rows[0].detail == "#199"  # the newest kept, the oldest dropped
    assert [int(row.detail[1:]) for row in rows] == list(range(199, 199 - len(rows), -1))
    # Two days later, one more refusal: the old ones are past their retention.
    ledger.store(
        [RejectedMessage(READINGS, "invalid_json", "late", b"{")], received_at=at(0) + 2 * day + 1000
    )
    with ledger.reader() as r:
        assert [row.detail for row in r.rejected()] == ["late"]
    ledger.close()


def test_the_payload_limit_matches_the_shipped_brokers_packet_limit() -> None:
    conf = (REPO / "deploy" / "mosquitto.conf").read_text()
    [packet_limit] = re.findall(r"^max_packet_size (\d+)$", conf, re.MULTILINE)
    assert LimitsSettings().max_payload_bytes == int(packet_limit)


def test_monotonic_times_at_the_int64_extremes_are_quarantined_not_an_overflow(ledger_at: LedgerAt) -> None:
    """Found by the fuzz test: a valid batch whose mono_ms (or a status whose clock anchor) sits at the
    contract's int64 extremes would re-date a reading past what SQLite holds (OverflowError). Such a
    reading is quarantined as implausible_time instead, and the rest of the batch is stored."""
    boot = "0f0f0f0f-0000-4000-8000-000000000000"
    ledger = Ledger(ledger_at("ledger"))

    def at_mono(ts: int, mono_ms: int, meter: str = "m1", clock: ClockState = ClockState.SYNCED) -> Reading:
        return reading(ts, meter=meter, imp=1.0, clock=clock).model_copy(update={"mono_ms": mono_ms})

    first = batch(at_mono(at(10), 1000), seq=1).model_copy(update={"boot_id": boot})
    assert ledger.ingest(first).accepted == 1
    stepped = batch(at_mono(at(10, 1), 2**63 - 1), at_mono(at(10, 2), 121_000, "m2"), seq=2)
    result = ledger.ingest(stepped.model_copy(update={"boot_id": boot}))
    assert (result.accepted, result.quarantined) == (1, {QuarantineReason.IMPLAUSIBLE_TIME: 1})

    unsynced = batch(at_mono(at(10, 3), 2**62, "m3", ClockState.UNSYNCED), seq=3)
    other_boot = "1f0f0f0f-0000-4000-8000-000000000000"
    assert ledger.ingest(unsynced.model_copy(update={"boot_id": other_boot})).quarantined == {
        QuarantineReason.AWAITING_ANCHOR: 1
    }
    anchor = ClockAnchor(boot_id=other_boot, offset_ms=2**63 - 1, synced_at=at(10, 4))
    released = ledger.record_status(
        status(ts=at(10, 4)).model_copy(update={"clock_anchor": anchor}), received_at=at(10, 4)
    )
    assert released.quarantined == {
        QuarantineReason.AWAITING_ANCHOR: -1,
        QuarantineReason.IMPLAUSIBLE_TIME: 1,
    }
    ledger.close()
