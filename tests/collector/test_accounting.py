"""Nothing lost, nothing counted twice: seq dedup and gaps, quarantine and re-dating, gateway events."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from collector.api.app import create_app
from collector.config import MqttSettings
from collector.ingest import Ingestor
from collector.metrics import CollectorMetrics
from collector.store import Ledger, QuarantineReason
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
    ReadingsBatch,
    topic,
)
from tests.api_support import api_client
from tests.collector_support import at, batch, reading

SPOOL = "0123abcd"
BOOT = "5f0e1d2c-aaaa-bbbb-cccc-0123456789ab"


def spooled(
    *readings: Reading, seq: int, spool: str | None = SPOOL, boot: str | None = BOOT
) -> ReadingsBatch:
    return batch(*readings, seq=seq).model_copy(update={"spool_id": spool, "boot_id": boot})


def unsynced(ts: int, mono_ms: int | None, imp: float) -> Reading:
    return reading(ts, imp=imp, clock=ClockState.UNSYNCED).model_copy(update={"mono_ms": mono_ms})


def status(offset_ms: int) -> GatewayStatus:
    return GatewayStatus(
        schema_version=SCHEMA_VERSION,
        site="site1",
        gateway="gw1",
        state=GatewayState.ONLINE,
        ts=at(12),
        agent_version="0.2.0",
        clock_anchor=ClockAnchor(boot_id=BOOT, offset_ms=offset_ms, synced_at=at(12)),
    )


def event(readings: int) -> GatewayEvent:
    return GatewayEvent(
        schema_version=SCHEMA_VERSION,
        site="site1",
        gateway="gw1",
        ts=at(11),
        kind=GatewayEventKind.SPOOL_EVICTED,
        readings=readings,
        oldest_ts=at(9),
        newest_ts=at(10),
        detail="spool over 100 MB: evicted the oldest batches",
    )


@pytest.fixture
async def running(
    tmp_path: Path,
) -> AsyncIterator[tuple[Ingestor, Ledger, CollectorMetrics, httpx.AsyncClient]]:
    metrics = CollectorMetrics()
    with Ledger(tmp_path / "ledger.db") as ledger:
        ingestor = Ingestor(settings=MqttSettings(), ledger=ledger, metrics=metrics)
        app = create_app(ledger=ledger.where, metrics=metrics, mqtt_connected=lambda: True)
        async with api_client(app, ledger.where) as client:
            yield ingestor, ledger, metrics, client


async def send(ingestor: Ingestor, *messages: ReadingsBatch | GatewayStatus | GatewayEvent) -> None:
    channels = {ReadingsBatch: Channel.READINGS, GatewayStatus: Channel.STATUS, GatewayEvent: Channel.EVENTS}
    await ingestor.store(
        [(topic(m.site, m.gateway, channels[type(m)]), m.model_dump_json().encode()) for m in messages]
    )


def value(metrics: CollectorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_seen_spool_seq_is_skipped_whole_even_with_other_readings(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert ledger.ingest(spooled(reading(at(10), imp=1.0), seq=0)).accepted == 1
        again = ledger.ingest(spooled(reading(at(10, 1), imp=2.0), seq=0))
        assert (again.duplicate_batch, again.accepted, again.duplicates) == (True, 0, 1)
        other_spool = ledger.ingest(spooled(reading(at(10, 1), imp=2.0), seq=0, spool="feedbeef"))
        assert (other_spool.duplicate_batch, other_spool.accepted) == (False, 1)


async def test_seq_gaps_are_kept_shrink_when_late_batches_fill_them_and_are_served(
    running: tuple[Ingestor, Ledger, CollectorMetrics, httpx.AsyncClient],
) -> None:
    ingestor, ledger, metrics, client = running
    await send(ingestor, *(spooled(reading(at(10, s), imp=float(s)), seq=s) for s in (0, 1, 5, 9)))
    assert value(metrics, "kilowatch_collector_batches_missing") == 3 + 3
    await send(ingestor, spooled(reading(at(10, 3), imp=3.0), seq=3))  # late: splits 2-4
    await send(ingestor, spooled(reading(at(10, 3), imp=3.0), seq=3))  # redelivered: skipped
    assert value(metrics, "kilowatch_collector_batches_missing") == 5
    assert value(metrics, "kilowatch_collector_batches_duplicate_total") == 1
    gaps = (await client.get("/api/v1/gateways/gaps")).json()
    assert [(g["spool_id"], g["first_seq"], g["last_seq"], g["batches"]) for g in gaps] == [
        (SPOOL, 2, 2, 1),
        (SPOOL, 4, 4, 1),
        (SPOOL, 6, 8, 3),
    ]
    # Agents without a spool_id restart seq with the agent: no gaps, no seq dedup.
    await send(ingestor, *(spooled(reading(at(11, s), imp=float(s)), seq=s, spool=None) for s in (0, 7, 0)))
    with ledger.reader() as r:
        assert r.missing_batches() == 5
        assert len(r.readings("m1", 0, at(23))) == 5 + 2


async def test_unsynced_readings_wait_in_quarantine_until_the_anchor_re_dates_them(
    running: tuple[Ingestor, Ledger, CollectorMetrics, httpx.AsyncClient],
) -> None:
    ingestor, ledger, metrics, client = running
    offset = at(10) - 1_000_000  # mono 1,000,000 ms is 10:00 UTC
    await send(
        ingestor,
        spooled(
            reading(at(9, 50), imp=9.0),
            unsynced(5_000, 1_000_000, 10.0),  # stamped 1970 by a clock that knew it was wrong
            unsynced(6_000, 1_900_000, 10.5),  # 10:15
            seq=0,
        ),
        spooled(unsynced(7_000, None, 11.0), seq=1),  # no monotonic time
    )
    assert value(metrics, "kilowatch_collector_readings_quarantined", reason="awaiting_clock_anchor") == 2
    assert value(metrics, "kilowatch_collector_readings_quarantined", reason="no_monotonic_time") == 1
    with ledger.reader() as r:
        assert [x.ts for x in r.readings("m1", 0, at(23))] == [at(9, 50)]
    listed = (await client.get("/api/v1/quarantine", params={"meter": "m1", "limit": 10})).json()
    assert [(q["mono_ms"], q["reason"]) for q in listed] == [
        (1_000_000, "awaiting_clock_anchor"),
        (1_900_000, "awaiting_clock_anchor"),
        (None, "no_monotonic_time"),
    ]
    assert listed[2]["detail"] == "no monotonic time to re-date it"
    assert (await client.get("/api/v1/quarantine", params={"meter": "m9"})).json() == []

    await send(ingestor, status(offset))
    await send(ingestor, spooled(unsynced(8_000, 2_800_000, 11.5), seq=2))  # after the anchor: at once
    with ledger.reader() as r:
        stored = [(x.ts, x.clock) for x in r.readings("m1", 0, at(23))]
        [left] = r.quarantine()
        energy = [i.energy_import_kwh for i in r.intervals("m1", at(9, 45), at(10, 45))]
    assert stored == [
        (at(9, 50), "synced"),
        (at(10), "corrected"),
        (at(10, 15), "corrected"),
        (at(10, 30), "corrected"),
    ]
    assert left.reason is QuarantineReason.NO_MONOTONIC_TIME
    assert energy == pytest.approx([1.0, 0.5, 1.0, None])
    assert value(metrics, "kilowatch_collector_readings_corrected_total") == 3
    assert value(metrics, "kilowatch_collector_readings_quarantined", reason="awaiting_clock_anchor") == 0
    assert value(metrics, "kilowatch_collector_readings_quarantined", reason="no_monotonic_time") == 1
    assert value(metrics, "kilowatch_collector_readings_accepted_total") == 4


async def test_gateway_events_are_kept_counted_once_and_listed(
    running: tuple[Ingestor, Ledger, CollectorMetrics, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    ingestor, _, metrics, client = running
    await send(ingestor, event(120), event(120))  # the second is a redelivery
    assert value(metrics, "kilowatch_collector_gateway_events_total", kind="spool_evicted") == 1
    assert value(metrics, "kilowatch_collector_evicted_readings_total") == 120
    assert "spool_evicted (120 readings)" in caplog.text
    [listed] = (await client.get("/api/v1/gateways/events")).json()
    assert (listed["kind"], listed["readings"], listed["oldest_ts"]) == (
        "spool_evicted",
        120,
        "2024-05-01T09:00:00Z",
    )


def synced(ts: int, mono_ms: int, imp: float) -> Reading:
    return reading(ts, imp=imp).model_copy(update={"mono_ms": mono_ms})


async def test_a_synced_clock_that_steps_away_is_caught_by_monotonic_time_and_re_dated(
    running: tuple[Ingestor, Ledger, CollectorMetrics, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    ingestor, ledger, metrics, _ = running
    boot = at(10) - 1_000_000  # this boot's offset: mono 1,000,000 ms is 10:00 UTC
    minute = 60_000
    hour = 60 * minute

    def polled(minutes: int, *, ahead_ms: int = 0) -> Reading:
        mono = 1_000_000 + minutes * minute
        return synced(boot + mono + ahead_ms, mono, 10.0 + minutes / 60)

    await send(ingestor, spooled(polled(0), polled(1), seq=0))
    await send(
        ingestor, spooled(polled(2, ahead_ms=hour), polled(3, ahead_ms=hour), seq=1)
    )  # stepped an hour
    await send(ingestor, spooled(polled(4, ahead_ms=hour), seq=2))  # the same step goes on
    await send(ingestor, spooled(polled(5, ahead_ms=5_000), seq=3))  # back, within the tolerance
    with ledger.reader() as r:
        stored = [(x.ts, x.clock) for x in r.readings("m1", 0, at(23))]
    assert stored == [
        (at(10), "synced"),
        (at(10, 1), "synced"),
        (at(10, 2), "corrected"),
        (at(10, 3), "corrected"),
        (at(10, 4), "corrected"),
        (at(10, 5, 5), "synced"),
    ]
    assert isinstance(ledger.where, Path)
    with sqlite3.connect(ledger.where) as db:
        steps = db.execute("SELECT gateway, boot_id, start_ts, end_ts, step_ms FROM clock_steps").fetchall()
    assert steps == [("gw1", BOOT, at(10, 2), at(10, 4), hour)]
    assert value(metrics, "kilowatch_collector_readings_clock_stepped_total") == 3
    assert sum("clock stepped" in r.getMessage() for r in caplog.records) == 1

    # An anchor from the agent is the boot's truth, rather than the first reading seen.
    await send(ingestor, status(boot + 30_000))
    await send(ingestor, spooled(polled(6, ahead_ms=30_000), polled(7), seq=4))
    with ledger.reader() as r:
        latest = [(x.ts, x.clock) for x in r.readings("m1", at(10, 6), at(23))]
    assert latest == [(at(10, 6, 30), "synced"), (at(10, 7, 30), "corrected")]
