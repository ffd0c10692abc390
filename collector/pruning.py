"""The collector's retention task: prunes the ledger now and then, in short steps, and gives the space back.

Each step is one short transaction of the ledger's writer (at most :data:`STEP_ROWS` rows), run on a
thread; ingest takes the writer between steps, so it never waits for a whole pass. A pass ends when a step
finds less than a full step to delete; then resolved alerts go the same way on the alerts' connection, and
freed pages are given back to the file system :data:`RECLAIM_PAGES` at a time. On PostgreSQL the month
partitions of readings the pass emptied are dropped (table ``partitions``, each named in the log). What a
pass deleted is logged (only when it deleted anything) and counted in
``kilowatch_collector_pruned_rows_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.metrics import CollectorMetrics
from collector.store import AlertLedger, Ledger, LedgerUnwritable, RetentionPolicy
from collector.store.connection import unwritable_raised

log = logging.getLogger(__name__)

STEP_ROWS = 2000
"""Rows one step (one transaction) deletes at most: a few milliseconds of the writer's time."""

RECLAIM_PAGES = 2048
"""Pages one step of incremental vacuum gives back (8 MiB of 4 KiB pages)."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class PassReport:
    """What one pass deleted, by table, and the bytes given back."""

    rows: dict[str, int] = field(default_factory=dict)
    reclaimed_bytes: int = 0

    def add(self, table: str, n: int) -> None:
        if n:
            self.rows[table] = self.rows.get(table, 0) + n


class Pruner:
    """Prunes `ledger` (and the resolved alerts of its file) by `policy` every `interval_s`.

    Args:
        ledger: The writer; its own retention policy says what readings it keeps.
        alerts: The alerts' writer on the same file.
        policy: The alerts' retention is read from it.
        clock: Wall-clock ms (bookkeeping is pruned by when it was received).
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        alerts: AlertLedger,
        policy: RetentionPolicy,
        interval_s: float,
        metrics: CollectorMetrics,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self._ledger = ledger
        self._alerts = alerts
        self._policy = policy
        self._interval_s = interval_s
        self._metrics = metrics
        self._clock = clock

    async def run(self) -> None:
        while True:
            try:
                await self.prune()
            except LedgerUnwritable as exc:  # a full disk, a lock held past the busy timeout: ingest waits
                log.warning(
                    "retention: pass put off to the next one (the ledger cannot be written now: %s)", exc
                )
            await asyncio.sleep(self._interval_s)

    async def prune(self) -> PassReport:
        """One pass: everything past its retention as of now, in steps; then the space given back."""
        report = PassReport()
        started = time.perf_counter()
        now = self._clock()
        while True:
            step = await asyncio.to_thread(self._ledger.prune, now_ms=now, limit=STEP_ROWS)
            for table, n in step.by_table().items():
                report.add(table, n)
            if step.rows < STEP_ROWS:
                break
        try:
            dropped = await asyncio.to_thread(self._ledger.drop_partitions, now_ms=now)
        except LedgerUnwritable as exc:  # readings locked by a long reader past the lock timeout, say
            log.warning("retention: emptied partitions left to the next pass (%s)", exc)
            dropped = []
        if dropped:
            log.info("retention: dropped the emptied partitions of readings %s", ", ".join(dropped))
            report.add("partitions", len(dropped))
        before = now - self._policy.resolved_alerts_ms
        while True:
            n = await asyncio.to_thread(self._prune_resolved, before)
            report.add("alerts", n)
            if n < STEP_ROWS:
                break
        while (freed := await asyncio.to_thread(self._ledger.reclaim, RECLAIM_PAGES)) > 0:
            report.reclaimed_bytes += freed
        for table, n in report.rows.items():
            self._metrics.pruned_rows.labels(table=table).inc(n)
        self._metrics.reclaimed_bytes.inc(report.reclaimed_bytes)
        if report.rows or report.reclaimed_bytes:
            log.info(
                "retention: pruned %s; %.1f MB given back to the file system, in %.1f s",
                ", ".join(f"{n} {table}" for table, n in report.rows.items()) or "nothing",
                report.reclaimed_bytes / 1e6, time.perf_counter() - started,
            )  # fmt: skip
        return report

    def _prune_resolved(self, before_ms: int) -> int:
        with unwritable_raised():
            return self._alerts.prune_resolved(before_ms=before_ms, limit=STEP_ROWS)
