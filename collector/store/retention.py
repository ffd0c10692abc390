"""Retention: the rows the ledger forgets, in small steps, and the space SQLite gives back.

Raw readings are kept for a window of each meter's own event time (its newest reading minus the window):
a replayed or backfilled history is kept like live data, and a meter gone silent keeps its last window.
The writer refuses a reading older than that window less a day (:func:`too_old`): its neighbours may be
gone, and a reading whose (meter, ts) is no longer stored cannot be told from a new one, so it could be
counted twice. 15-minute intervals and counter events are kept for ever. Bookkeeping is pruned by when the
collector received it: batches (the newest of each spool stays, to number the next one), seq gaps,
quarantined readings; and resolved alerts by when they were resolved. Refused messages have their own
bounds (:class:`~collector.store.delivery.RejectedLimits`), and TSDB outbox rows and notifications are
deleted once delivered.

Every function here deletes at most `limit` rows, so the caller keeps each transaction short and ingest
is never held up for long.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from collector.intervals import MAX_SPREAD_MS

_STALE_METERS = """
SELECT k.id, k.meter_id, l.ts - ?1 FROM latest l JOIN meter_keys k ON k.meter_id = l.meter_id
WHERE (SELECT min(ts) FROM readings WHERE meter = k.id) < l.ts - ?1
"""
_DROP_READINGS = """
DELETE FROM readings WHERE meter = ?1 AND ts IN (SELECT ts FROM readings WHERE meter = ?1 AND ts < ?2 ORDER BY ts LIMIT ?3)
"""
_DROP_BATCHES = """
DELETE FROM batches WHERE (site, gateway, spool, seq) IN (
    SELECT site, gateway, spool, seq FROM batches b WHERE received_at < ?1 AND seq < (
        SELECT max(seq) FROM batches n WHERE n.site = b.site AND n.gateway = b.gateway AND n.spool = b.spool
    ) LIMIT ?2
)
"""
_DROP_GAPS = """
DELETE FROM seq_gaps WHERE (site, gateway, spool, first_seq) IN (
    SELECT site, gateway, spool, first_seq FROM seq_gaps WHERE detected_at < ?1 LIMIT ?2
)
"""
_DROP_QUARANTINE = (
    "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE received_at < ? ORDER BY id LIMIT ?)"
)
_DROP_ALERTS = (
    "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE status = 'resolved' AND resolved_at < ?"
    " ORDER BY id LIMIT ?) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long the ledger keeps each kind of row, ms."""

    readings_ms: int
    """Raw readings, of each meter's own event time."""
    batches_ms: int
    """Batches seen and seq gaps, by when they were received."""
    quarantine_ms: int
    """Quarantined readings, by when they were received."""
    resolved_alerts_ms: int
    """Resolved alerts, by when they were resolved."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one step deleted, by table."""

    readings: int = 0
    batches: int = 0
    seq_gaps: int = 0
    quarantine: int = 0
    meters: tuple[str, ...] = ()
    """The meters whose readings were pruned."""

    @property
    def rows(self) -> int:
        return self.readings + self.batches + self.seq_gaps + self.quarantine


def too_old(ts: int, newest_ts: int, readings_ms: int) -> bool:
    """Whether a reading at `ts` of a meter whose newest stored reading is at `newest_ts` is too old to be
    stored: within a day of what retention drops, its stored neighbours may be gone (a counter step longer
    than MAX_SPREAD_MS is not energy: one no longer has both ends kept)."""
    return ts < newest_ts - readings_ms + MAX_SPREAD_MS


def prune(db: sqlite3.Connection, policy: RetentionPolicy, *, now_ms: int, limit: int) -> Pruned:
    """Delete at most about `limit` rows past their retention (readings first); a step that deletes fewer
    than `limit` leaves nothing to prune as of `now_ms`."""
    left = limit
    readings = 0
    meters: list[str] = []
    for key, meter, before in db.execute(_STALE_METERS, (policy.readings_ms,)).fetchall():
        if left <= 0:
            break
        dropped = db.execute(_DROP_READINGS, (key, before, left)).rowcount
        readings += dropped
        left -= dropped
        meters.append(meter)
    before = now_ms - policy.batches_ms
    batches = db.execute(_DROP_BATCHES, (before, max(left, 0))).rowcount
    left -= batches
    gaps = db.execute(_DROP_GAPS, (before, max(left, 0))).rowcount
    left -= gaps
    quarantine = db.execute(_DROP_QUARANTINE, (now_ms - policy.quarantine_ms, max(left, 0))).rowcount
    return Pruned(readings, batches, gaps, quarantine, tuple(meters))


def prune_alerts(db: sqlite3.Connection, *, before_ms: int, limit: int) -> int:
    """Delete at most `limit` alerts resolved before `before_ms`, with any notification of theirs still
    queued; returns how many."""
    ids = [(alert_id,) for (alert_id,) in db.execute(_DROP_ALERTS, (before_ms, limit)).fetchall()]
    db.executemany("DELETE FROM alert_outbox WHERE alert_id = ?", ids)
    return len(ids)


def reclaim(db: sqlite3.Connection, pages: int) -> int:
    """Give back to the file system up to `pages` free pages (incremental vacuum: the file shrinks at the
    next checkpoint); returns how many bytes."""
    (free_before,) = db.execute("PRAGMA freelist_count").fetchone()
    db.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    (free_after,) = db.execute("PRAGMA freelist_count").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    return int(free_before - free_after) * int(page_size)
