"""The collector's retention task: one pass prunes every kind of row past its retention, in steps, counts it
in the metrics, logs it, and leaves what is still kept."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import psycopg
import pytest

from collector.detectors.findings import Detector
from collector.metrics import CollectorMetrics
from collector.pruning import STEP_ROWS, Pruner
from collector.store import (
    Alert,
    AlertLedger,
    AlertQuery,
    AlertStatus,
    Ledger,
    LedgerReader,
    Postgres,
    RetentionPolicy,
    pg_schema,
    postgres,
)
from kilowatch.mqtt_contract import SCHEMA_VERSION, GatewayEvent, GatewayEventKind
from kilowatch.timebase import DAY_MS
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt

NOW = at(12, day=31)
POLICY = RetentionPolicy(
    readings_ms=10 * DAY_MS, compact_after_ms=3 * DAY_MS, batches_ms=5 * DAY_MS, quarantine_ms=5 * DAY_MS,
    resolved_alerts_ms=20 * DAY_MS, gateway_events_ms=8 * DAY_MS,
)  # fmt: skip


def alert(resolved_at: int | None) -> Alert:
    return Alert(
        id=0, site="site1", meter="m1", detector=Detector.AFTER_HOURS, rule="R4",
        status=AlertStatus.OPEN if resolved_at is None else AlertStatus.RESOLVED, start_ms=at(19),
        end_ms=resolved_at, detected_at=at(19), raised_at=at(19), raised_late=False, last_seen=at(19), count=1,
        occurrence_start_ms=at(19), occurrence_kwh=1.0, prior_kwh=0.0, occurrence_vnd=2000.0, prior_vnd=0.0,
        magnitude=None, finding_en="On after hours.", finding_vi="Chạy ngoài giờ.", acknowledged_at=None,
        silenced_until=None, silence_reason=None, resolved_at=resolved_at,
    )  # fmt: skip


def spool_evicted(day: int) -> GatewayEvent:
    return GatewayEvent(
        schema_version=SCHEMA_VERSION, site="site1", gateway="gw1", ts=at(11, day=day),
        kind=GatewayEventKind.SPOOL_EVICTED, readings=10, oldest_ts=at(9, day=day), newest_ts=at(10, day=day),
        detail="spool over 100 MB: evicted the oldest batches",
    )  # fmt: skip


def test_a_pass_prunes_packs_counts_and_logs(ledger_at: LedgerAt, caplog: pytest.LogCaptureFixture) -> None:
    path = ledger_at("kilowatch")
    metrics = CollectorMetrics()
    with Ledger(path, retention=POLICY) as ledger, AlertLedger(path) as alerts:
        for day in range(1, 31):  # a reading an hour for 30 days, a batch and a gateway event a day
            readings = [reading(at(h, day=day), imp=day * 24 + h, power_w=1000.0) for h in range(24)]
            ledger.store([batch(*readings, seq=day), spool_evicted(day)], received_at=at(12, day=day))
        with alerts.transaction() as transaction:
            for resolved in (at(20, day=5), at(20, day=25), None):
                transaction.insert(alert(resolved))
        pruner = Pruner(
            ledger=ledger, alerts=alerts, policy=POLICY, interval_s=600, metrics=metrics, clock=lambda: NOW
        )
        with caplog.at_level(logging.INFO, logger="collector.pruning"):
            report = asyncio.run(pruner.prune())
        remaining = alerts.alerts(AlertQuery())
    # Kept: the 10 days before the newest reading (23:00 UTC on the 30th); packed: those before the local
    # midnight 3 days before it (17:00 UTC on the 27th).
    # Gateway events: those received more than 8 days before NOW (noon on the 31st).
    assert report.rows == {
        "readings": 19 * 24 + 23, "packed": 1 + 6 * 24 + 17, "batches": 25, "gateway_events": 22, "alerts": 1
    }  # fmt: skip
    # SQLite gives the freed pages back; PostgreSQL's autovacuum keeps them for reuse.
    assert (report.reclaimed_bytes > 0) is isinstance(path, Path)
    assert "retention: pruned" in caplog.text
    sample = metrics.registry.get_sample_value
    assert sample("kilowatch_collector_pruned_rows_total", {"table": "readings"}) == 19 * 24 + 23
    assert sample("kilowatch_collector_reclaimed_bytes_total") == report.reclaimed_bytes
    assert sorted(a.resolved_at or 0 for a in remaining) == [0, at(20, day=25)]
    with LedgerReader(path) as reader:
        kept = reader.power_samples("m1", 0, 2**62)
        assert reader.count_readings("m1", 0, 2**62) == len(kept) == 10 * 24 + 1
        assert (kept[0].ts, kept[-1].ts) == (at(23, day=20), at(23, day=30))
        assert reader.newest_trusted_ts("m1", at(12, day=23)) == at(12, day=23)  # in a block
        assert reader.stored_batches() == 5
        assert sorted(e.ts for e in reader.gateway_events()) == [at(11, day=day) for day in range(23, 31)]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_on_postgresql_a_pass_drops_the_month_partitions_it_emptied(
    ledger_at: LedgerAt, caplog: pytest.LogCaptureFixture
) -> None:
    where = ledger_at("kilowatch")
    assert isinstance(where, Postgres)
    writer = postgres.open_writer(where)
    for month_ms in (at(0, day=15) - 120 * DAY_MS, at(0, day=15) - 30 * DAY_MS):  # January to June 2024
        pg_schema.add_partitions(writer, month_ms)
    writer.close()
    # m1 reads every 6 hours from mid-January to the 30th of May; m2 fell silent on the 10th of March.
    m1 = [at(0, day=15) - 121 * DAY_MS + i * DAY_MS // 4 for i in range(4 * 136)]
    m2 = [ts for ts in m1 if ts <= at(0, day=10) - 61 * DAY_MS]
    metrics = CollectorMetrics()
    with Ledger(where, retention=POLICY) as ledger, AlertLedger(where) as alerts:
        ledger.ingest(
            batch(
                *(reading(ts, imp=i, power_w=1000.0) for i, ts in enumerate(m1)),
                *(reading(ts, meter="m2", imp=i, power_w=1000.0) for i, ts in enumerate(m2)),
                seq=1,
            )
        )
        pruner = Pruner(
            ledger=ledger, alerts=alerts, policy=POLICY, interval_s=600, metrics=metrics, clock=lambda: NOW
        )
        with caplog.at_level(logging.INFO, logger="collector.pruning"):
            with psycopg.connect(where.url) as long_read:  # holds readings past the drop's lock timeout
                long_read.execute("SELECT count(*) FROM readings")
                first = asyncio.run(pruner.prune())
            report = asyncio.run(pruner.prune())
    # The first pass packs all it should and leaves the partitions it emptied to the next one.
    assert first.rows["packed"] > 0
    assert "partitions" not in first.rows
    assert "emptied partitions left to the next pass" in caplog.text
    # Packing emptied January to April, but m2 may still hold rows from early March: only the months wholly
    # before that go. March holds m2's rows; April is empty but not wholly before them; May is m1's.
    assert report.rows == {"partitions": 2}
    assert "dropped the emptied partitions of readings readings_y2024m01, readings_y2024m02" in caplog.text
    sample = metrics.registry.get_sample_value
    assert sample("kilowatch_collector_pruned_rows_total", {"table": "partitions"}) == 2
    with psycopg.connect(where.url) as db:
        names = db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass AND c.relname LIKE 'readings_y2024%' ORDER BY 1"
        ).fetchall()
        (held,) = db.execute("SELECT count(*) FROM readings_y2024m03").fetchone() or (0,)
    assert [name for (name,) in names] == [f"readings_y2024m{month:02d}" for month in (3, 4, 5, 6)]
    assert held > 0
    with LedgerReader(where) as reader:  # every reading within retention is still there
        for meter, stamps in (("m1", m1), ("m2", m2)):
            kept = [s.ts for s in reader.power_samples(meter, 0, 2**62)]
            assert kept == [ts for ts in stamps if ts >= stamps[-1] - POLICY.readings_ms]


def test_one_step_does_a_bounded_amount_of_work(ledger_at: LedgerAt) -> None:
    with Ledger(ledger_at("kilowatch"), retention=POLICY) as ledger:
        readings = [reading(at(0, day=1) + i * 60_000, imp=i / 10) for i in range(3 * STEP_ROWS)]
        ledger.ingest(batch(*readings, reading(at(0, day=30), imp=1e4)))
        steps = []
        while (step := ledger.prune(now_ms=NOW, limit=STEP_ROWS)).rows >= STEP_ROWS:
            steps.append(step.rows)
        assert steps == [STEP_ROWS, STEP_ROWS, STEP_ROWS]
        assert step.readings == 0


def test_a_pass_the_ledger_cannot_take_now_waits_for_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer holds the SQLite file past the busy timeout: the writer still opens it (a current file
    needs no lock), the pass is put off with a warning instead of ending the task, and the next pass prunes."""
    path = tmp_path / "kilowatch.db"
    Ledger(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with Ledger(path, retention=POLICY) as ledger, AlertLedger(path) as alerts:
        pruner = Pruner(
            ledger=ledger, alerts=alerts, policy=POLICY, interval_s=0.1, metrics=CollectorMetrics(),
            clock=lambda: NOW,
        )  # fmt: skip

        async def two_passes() -> None:
            task = asyncio.create_task(pruner.run())
            while "put off" not in caplog.text:
                assert not task.done(), task
                await asyncio.sleep(0.1)
            holder.execute("ROLLBACK")
            ledger.store([batch(reading(at(0, day=1)), reading(at(0, day=30)), seq=1)], received_at=NOW)
            while "retention: pruned" not in caplog.text:
                assert not task.done(), task
                await asyncio.sleep(0.1)
            task.cancel()

        with caplog.at_level(logging.INFO, logger="collector.pruning"):
            asyncio.run(two_passes())
        with LedgerReader(path) as reader:
            assert reader.count_readings("m1", 0, 2**62) == 1  # the day-30 one; day 1 is past retention
    holder.close()
