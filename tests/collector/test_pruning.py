"""The collector's retention task: one pass prunes every kind of row past its retention, in steps, counts it
in the metrics, logs it, and leaves what is still kept."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from collector.detectors.findings import Detector
from collector.metrics import CollectorMetrics
from collector.pruning import STEP_ROWS, Pruner
from collector.store import Alert, AlertLedger, AlertQuery, AlertStatus, Ledger, LedgerReader, RetentionPolicy
from kilowatch.timebase import DAY_MS
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt

NOW = at(12, day=31)
POLICY = RetentionPolicy(
    readings_ms=10 * DAY_MS, compact_after_ms=3 * DAY_MS, batches_ms=5 * DAY_MS, quarantine_ms=5 * DAY_MS,
    resolved_alerts_ms=20 * DAY_MS,
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


def test_a_pass_prunes_packs_counts_and_logs(ledger_at: LedgerAt, caplog: pytest.LogCaptureFixture) -> None:
    path = ledger_at("kilowatch")
    metrics = CollectorMetrics()
    with Ledger(path, retention=POLICY) as ledger, AlertLedger(path) as alerts:
        for day in range(1, 31):  # a reading an hour for 30 days, a batch a day
            readings = [reading(at(h, day=day), imp=day * 24 + h, power_w=1000.0) for h in range(24)]
            ledger.store([batch(*readings, seq=day)], received_at=at(12, day=day))
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
    assert report.rows == {"readings": 19 * 24 + 23, "packed": 1 + 6 * 24 + 17, "batches": 25, "alerts": 1}
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
