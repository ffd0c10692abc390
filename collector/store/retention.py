"""Retention: the rows the ledger forgets, in small steps, and the space SQLite gives back.

Raw readings are kept for a window of each meter's own event time (back from its newest reading): a
replayed or backfilled history is kept like live data, and a meter gone silent keeps its last window. Rows
older than `compact_after_ms` are packed into one block per meter and local day
(:mod:`collector.store.blocks`), blocks older than `readings_ms` dropped. The writer refuses a reading
within a day of what is packed or dropped (:func:`too_old`): the interval upkeep looks up a new reading's
neighbours in rows only, and a reading whose (meter, ts) is no longer stored cannot be told from a new one,
so it could be counted twice. 15-minute intervals and counter events are kept for ever. Bookkeeping is pruned by when the
collector received it: batches (the newest of each spool stays, to number the next one), seq gaps,
quarantined readings, gateway events; and resolved alerts by when they were resolved. Refused messages have their own
bounds (:class:`~collector.store.delivery.RejectedLimits`), and TSDB outbox rows and notifications are
deleted once delivered.

On PostgreSQL, the month partitions of ``readings`` wholly before the oldest row any meter may still hold
are dropped once empty (:func:`drop_partitions`): packing empties them, and a table dropped gives its space
back where deleted rows only leave it for reuse.

Every function here deletes (or packs) about `limit` rows at most, so the caller keeps each transaction short and ingest
is never held up for long.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.intervals import MAX_SPREAD_MS
from collector.store import blocks, pg_schema
from collector.store.blocks import Block
from collector.store.connection import Db, Dialect
from collector.store.readings import rows_block
from kilowatch.quantities import ACTIVE_POWER, ENERGY_EXPORT, ENERGY_IMPORT
from kilowatch.timebase import DAY_MS, OFFSET_MS

_STALE_METERS = """
SELECT k.id, k.meter_id, l.ts - :window FROM latest l JOIN meter_keys k ON k.meter_id = l.meter_id
WHERE (SELECT min(ts) FROM readings WHERE meter = k.id) < l.ts - :window
"""
_DROP_READINGS = """
DELETE FROM readings WHERE meter = :meter AND ts IN (
    SELECT ts FROM readings WHERE meter = :meter AND ts < :before ORDER BY ts LIMIT :limit
)
"""
_DROP_BLOCKS = """
DELETE FROM reading_blocks WHERE (meter, day_ms) IN (
    SELECT b.meter, b.day_ms FROM reading_blocks b JOIN meter_keys k ON k.id = b.meter
    JOIN latest l ON l.meter_id = k.meter_id WHERE b.last_ts < l.ts - :window LIMIT :limit
) RETURNING readings
"""
# Each meter's oldest row, when it lies before the start of the local day `compact_after_ms` before its
# newest (local days: detection and reports read from a local midnight, so a block is wholly in or out).
_COMPACTABLE = f"""
SELECT id, meter_id, oldest - (oldest + {OFFSET_MS}) % {DAY_MS} FROM (
    SELECT k.id, k.meter_id, l.ts - :after - (l.ts - :after + {OFFSET_MS}) % {DAY_MS} AS cut,
        (SELECT min(ts) FROM readings WHERE meter = k.id) AS oldest
    FROM latest l JOIN meter_keys k ON k.meter_id = l.meter_id
) AS m WHERE oldest < cut
"""  # noqa: S608 - constants
_DAY_ROWS = f"""
SELECT ts, {ENERGY_IMPORT}, {ENERGY_EXPORT}, {ACTIVE_POWER}, moving, quality, clock FROM readings
WHERE meter = ? AND ts < ? ORDER BY ts
"""  # noqa: S608 - column names are constants
_PACKED = "SELECT data FROM reading_blocks WHERE meter = ? AND day_ms = ?"
_PACK = """
INSERT INTO reading_blocks (meter, day_ms, first_ts, last_ts, readings, data) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (meter, day_ms) DO UPDATE SET first_ts = excluded.first_ts, last_ts = excluded.last_ts,
    readings = excluded.readings, data = excluded.data
"""
_DROP_DAY_ROWS = "DELETE FROM readings WHERE meter = ? AND ts < ?"
_DROP_BATCHES = """
DELETE FROM batches WHERE (site, gateway, spool, seq) IN (
    SELECT site, gateway, spool, seq FROM batches b WHERE received_at < :before AND seq < (
        SELECT max(seq) FROM batches n WHERE n.site = b.site AND n.gateway = b.gateway AND n.spool = b.spool
    ) LIMIT :limit
)
"""
_DROP_GAPS = """
DELETE FROM seq_gaps WHERE (site, gateway, spool, first_seq) IN (
    SELECT site, gateway, spool, first_seq FROM seq_gaps WHERE detected_at < :before LIMIT :limit
)
"""
_DROP_QUARANTINE = (
    "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE received_at < ? ORDER BY id LIMIT ?)"
)
_DROP_EVENTS = (
    "DELETE FROM gateway_events WHERE id IN (SELECT id FROM gateway_events WHERE received_at < ? ORDER BY id"
    " LIMIT ?)"
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
    compact_after_ms: int
    """Rows of readings older than this (each meter's event time) are packed into day blocks; a reading
    arriving older than this less a day is refused (:func:`too_old`)."""
    batches_ms: int
    """Batches seen and seq gaps, by when they were received."""
    quarantine_ms: int
    """Quarantined readings, by when they were received."""
    resolved_alerts_ms: int
    """Resolved alerts, by when they were resolved."""
    gateway_events_ms: int
    """Gateway events (the gateways' own and what the collector noticed of them), by when they were
    received: a gateway that keeps sending events, or readings of meters not its own, adds a row each time."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one step deleted, by table."""

    readings: int = 0
    """Raw readings deleted (rows and in blocks)."""
    packed: int = 0
    """Rows of readings packed into day blocks."""
    batches: int = 0
    seq_gaps: int = 0
    quarantine: int = 0
    gateway_events: int = 0
    meters: tuple[str, ...] = ()
    """The meters whose rows of readings were deleted or packed."""

    def by_table(self) -> dict[str, int]:
        """Rows deleted or packed, by table (packed: the rows of readings moved into day blocks)."""
        return {table: getattr(self, table) for table in _COUNTED}

    @property
    def rows(self) -> int:
        """Rows deleted or packed: the step's work."""
        return sum(self.by_table().values())


_COUNTED = ("readings", "packed", "batches", "seq_gaps", "quarantine", "gateway_events")
"""The fields of :class:`Pruned` that count rows."""


def too_old(ts: int, newest_ts: int, policy: RetentionPolicy) -> bool:
    """Whether a reading at `ts` of a meter whose newest stored reading is at `newest_ts` is too old to be
    stored: within MAX_SPREAD_MS of what is packed or dropped, its stored neighbours may be out of reach of
    the interval upkeep (a counter step longer than that is not energy: one within it has both ends in
    rows), and its (meter, ts) may have been stored and dropped."""
    return ts < newest_ts - min(policy.compact_after_ms, policy.readings_ms) + MAX_SPREAD_MS


def prune(db: Db, policy: RetentionPolicy, *, now_ms: int, limit: int) -> Pruned:
    """Delete or pack at most about `limit` rows (a meter's day of readings is packed whole); a step that
    does less than `limit` leaves nothing to do as of `now_ms`."""
    left = limit
    readings = 0
    meters: list[str] = []
    for key, meter, before in db.execute(_STALE_METERS, {"window": policy.readings_ms}).fetchall():
        if left <= 0:
            break
        dropped = db.execute(_DROP_READINGS, {"meter": key, "before": before, "limit": left}).rowcount
        readings += dropped
        left -= dropped
        meters.append(meter)
    if left > 0:
        dropped = sum(
            n for (n,) in db.execute(_DROP_BLOCKS, {"window": policy.readings_ms, "limit": left}).fetchall()
        )
        readings += dropped
        left -= dropped
    packed = 0
    while left > 0 and (days := db.execute(_COMPACTABLE, {"after": policy.compact_after_ms}).fetchall()):
        for key, meter, day_ms in days:  # each meter's oldest day
            if left <= 0:
                break
            n = _pack_day(db, key, day_ms)
            packed += n
            left -= n
            meters.append(meter)
    before = now_ms - policy.batches_ms
    batches = db.execute(_DROP_BATCHES, {"before": before, "limit": max(left, 0)}).rowcount
    left -= batches
    gaps = db.execute(_DROP_GAPS, {"before": before, "limit": max(left, 0)}).rowcount
    left -= gaps
    quarantine = db.execute(_DROP_QUARANTINE, (now_ms - policy.quarantine_ms, max(left, 0))).rowcount
    left -= quarantine
    events = db.execute(_DROP_EVENTS, (now_ms - policy.gateway_events_ms, max(left, 0))).rowcount
    return Pruned(readings, packed, batches, gaps, quarantine, events, tuple(meters))


def _pack_day(db: Db, key: int, day_ms: int) -> int:
    """Move the meter's rows of the local day from `day_ms` (and any older) into its block; returns how
    many."""
    end = day_ms + DAY_MS
    block = rows_block(db.execute(_DAY_ROWS, (key, end)).fetchall())
    packed = db.execute(_PACKED, (key, day_ms)).fetchone()
    whole = block if packed is None else Block.join([blocks.decode(packed[0]), block])
    first, last = int(whole.ts[0]), int(whole.ts[-1])
    db.execute(_PACK, (key, day_ms, first, last, len(whole), blocks.encode(whole)))
    db.execute(_DROP_DAY_ROWS, (key, end))
    return len(block)


def drop_partitions(db: Db, policy: RetentionPolicy, *, now_ms: int) -> list[str]:
    """PostgreSQL only: drop the readings' month partitions that end by the oldest time any meter may still
    hold rows (and before the current month) and hold none; returns their names.

    That time is the local midnight before the newest reading of the meter heard from longest ago, less the
    shorter of the packing and dropping windows: :func:`prune` leaves no meter a row before it. A meter's
    readings that old are refused (:func:`too_old`), so none can come into those months but a new meter's,
    which lands in the default partition.
    """
    (newest,) = db.execute("SELECT min(ts) FROM latest").fetchone()
    if newest is None:
        return []
    cut = newest - min(policy.compact_after_ms, policy.readings_ms)
    oldest = cut - (cut + OFFSET_MS) % DAY_MS
    return pg_schema.drop_partitions(db, before_ms=min(oldest, now_ms))


def prune_alerts(db: Db, *, before_ms: int, limit: int) -> int:
    """Delete at most `limit` alerts resolved before `before_ms`, with any notification of theirs still
    queued; returns how many."""
    ids = [(alert_id,) for (alert_id,) in db.execute(_DROP_ALERTS, (before_ms, limit)).fetchall()]
    db.executemany("DELETE FROM alert_outbox WHERE alert_id = ?", ids)
    return len(ids)


def reclaim(db: Db, pages: int) -> int:
    """Give back to the file system up to `pages` free pages (incremental vacuum: the file shrinks at the
    next checkpoint); returns how many bytes. SQLite only: PostgreSQL's autovacuum makes what is deleted
    reusable within its tables, and dropping a month's partition of readings gives its space back."""
    if db.dialect is Dialect.POSTGRESQL:
        return 0
    (free_before,) = db.execute("PRAGMA freelist_count").fetchone()
    db.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    (free_after,) = db.execute("PRAGMA freelist_count").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    return int(free_before - free_after) * int(page_size)
