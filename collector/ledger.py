"""The ledger: the collector's durable record in SQLite (WAL), and the source the API reads.

:class:`Ledger` is the single writer. Its methods are synchronous and serialised by a lock; async
callers run them with ``asyncio.to_thread``. :class:`LedgerReader` opens its own read-only connection,
so API requests read concurrently with ingestion (WAL lets readers and one writer overlap).

Every sink is idempotent on (meter, ts): a reading that is already stored is ignored and counted, so an
at-least-once resend never double-counts energy. Intervals are kept up to date step by step: a new
reading of a counter either extends the series (its step from the previous reading is added) or lands
between two stored readings, whose step prev->next is taken out again and replaced by prev->new and
new->next. Each reading costs a couple of indexed look-ups and an UPSERT per bucket its steps span, and a
late or out-of-order reading gives the in-order result up to floating-point rounding. Steps left out of
intervals (a counter going backwards, a gap longer than a day) are kept in ``counter_events``. Readings
stamped by a gateway whose clock was not synchronised are stored but kept out of intervals, because their
time could put energy in the wrong bucket; the counter being cumulative, the energy is not lost but
attributed by the trusted readings around them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from collector.intervals import INTERVAL_MS, CounterSample, CounterStep, bucket_start
from kilowatch.mqtt_contract import ClockState, GatewayStatus, Quality, Reading, ReadingsBatch
from kilowatch.quantities import ACTIVE_POWER, ENERGY_EXPORT, ENERGY_IMPORT

COUNTERS = (ENERGY_IMPORT, ENERGY_EXPORT)
"""The cumulative counters intervals are computed from; also column names of `readings` and `intervals`."""

MAX_REJECTED_PAYLOAD = 256 * 1024
"""Bytes of a rejected payload kept; the rest is cut off (the original size is stored beside it)."""

_TRUSTED = f"clock != '{ClockState.UNSYNCED.value}'"

# `readings` keeps its rowid: its rows carry every value as JSON (~1 kB), too big for a WITHOUT ROWID
# b-tree, and a batch appends them in rowid order instead of into one leaf per meter.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    profile TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    meter_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    {ENERGY_IMPORT} REAL,
    {ENERGY_EXPORT} REAL,
    {ACTIVE_POWER} REAL,
    "values" TEXT NOT NULL,
    quality TEXT NOT NULL,
    clock TEXT NOT NULL,
    PRIMARY KEY (meter_id, ts)
);
CREATE TABLE IF NOT EXISTS latest (
    meter_id TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    "values" TEXT NOT NULL,
    quality TEXT NOT NULL,
    value_quality TEXT NOT NULL,
    clock TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS intervals (
    meter_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    {ENERGY_IMPORT} REAL,
    {ENERGY_EXPORT} REAL,
    max_kw REAL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (meter_id, start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counter_events (
    meter_id TEXT NOT NULL,
    quantity TEXT NOT NULL,
    kind TEXT NOT NULL,
    prev_ts INTEGER NOT NULL,
    prev_value REAL NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (meter_id, quantity, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gateways (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    state TEXT NOT NULL,
    ts INTEGER NOT NULL,
    agent_version TEXT NOT NULL,
    meters TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway)
);
"""

# Column names below come from the COUNTERS constant, never from input.
_INSERT_READING = (
    f"INSERT OR IGNORE INTO readings (meter_id, ts, {ENERGY_IMPORT}, {ENERGY_EXPORT}, {ACTIVE_POWER},"  # noqa: S608
    ' "values", quality, clock) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'
)
_NEIGHBOURS_SQL = {
    q: f"""
    SELECT * FROM (SELECT ts, {q} FROM readings WHERE meter_id = :meter AND {q} IS NOT NULL AND {_TRUSTED}
                   AND ts < :ts ORDER BY ts DESC LIMIT 1)
    UNION ALL
    SELECT * FROM (SELECT ts, {q} FROM readings WHERE meter_id = :meter AND {q} IS NOT NULL AND {_TRUSTED}
                   AND ts > :ts ORDER BY ts LIMIT 1)
    """  # noqa: S608
    for q in COUNTERS
}
# Taking a step out can leave rounding residue; energy is never negative, so it stops at 0.
_ADD_ENERGY_SQL = {
    q: f"INSERT INTO intervals (meter_id, start_ms, {q}, samples) VALUES (?, ?, ?, 0)"  # noqa: S608
    f" ON CONFLICT (meter_id, start_ms) DO UPDATE SET {q} = max(coalesce({q}, 0.0) + excluded.{q}, 0.0)"
    for q in COUNTERS
}
# SQLite's max(a, b) is NULL when either is: keep the known one.
_ADD_SAMPLE_SQL = (
    "INSERT INTO intervals (meter_id, start_ms, max_kw, samples) VALUES (?, ?, ?, 1)"
    " ON CONFLICT (meter_id, start_ms) DO UPDATE SET samples = samples + 1,"
    " max_kw = coalesce(max(max_kw, excluded.max_kw), max_kw, excluded.max_kw)"
)


@dataclass(frozen=True)
class IngestResult:
    """What one batch did to the ledger."""

    accepted: int
    """Readings newly stored."""
    duplicates: int
    """Readings ignored because that (meter, ts) was already stored."""
    counter_resets: int
    """Energy counters newly found going backwards."""


@dataclass(frozen=True)
class MeterRow:
    meter_id: str
    site: str
    gateway: str
    profile: str
    first_seen: int
    last_seen: int


@dataclass(frozen=True)
class LatestRow:
    meter_id: str
    ts: int
    values: dict[str, float]
    quality: Quality
    value_quality: dict[str, Quality]
    clock: ClockState


@dataclass(frozen=True)
class IntervalRow:
    meter_id: str
    start_ms: int
    energy_import_kwh: float | None
    energy_export_kwh: float | None
    max_kw: float | None
    samples: int


@dataclass(frozen=True)
class ReadingRow:
    meter_id: str
    ts: int
    values: dict[str, float]
    quality: Quality
    clock: ClockState


class CounterEventKind(StrEnum):
    RESET = "reset"
    """The counter went backwards (reset or replaced meter); the step counts as 0."""
    GAP = "gap"
    """The readings are too far apart to say when the energy flowed; the step is in no interval."""


@dataclass(frozen=True)
class CounterEvent:
    """A step between two consecutive readings of a counter that intervals leave out."""

    meter_id: str
    quantity: str
    kind: CounterEventKind
    prev_ts: int
    prev_value: float
    ts: int
    value: float


@dataclass(frozen=True)
class RejectedRow:
    id: int
    received_at: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int


@dataclass(frozen=True)
class GatewayRow:
    site: str
    gateway: str
    state: str
    ts: int
    agent_version: str
    meters: list[str]
    received_at: int


class _Closing:
    _db: sqlite3.Connection

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Ledger(_Closing):
    """The single writer. Creates the file and its tables when missing."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def ingest(self, batch: ReadingsBatch) -> IngestResult:
        """Store a batch in one transaction: readings, meters, latest values and the intervals it changes."""
        with self._transaction() as db:
            new: list[Reading] = []
            resets = 0
            # One at a time, so each finds its stored neighbours, earlier ones of this batch included;
            # in time order (stable: the first of two equal readings is kept), most of them only append.
            for reading in sorted(batch.readings, key=lambda r: r.ts):
                if _insert_reading(db, reading):
                    new.append(reading)
                    if reading.clock is not ClockState.UNSYNCED:
                        resets += _add_to_intervals(db, reading)
            for readings in _by_meter(new).values():
                _upsert_latest(db, max(readings, key=lambda r: r.ts))
                _upsert_meter(db, batch, readings)
        duplicates = len(batch.readings) - len(new)
        return IngestResult(accepted=len(new), duplicates=duplicates, counter_resets=resets)

    def record_status(self, status: GatewayStatus, *, received_at: int) -> None:
        """Keep a gateway's last status as it arrived (a last will is older than the birth it follows)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO gateways VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    status.site,
                    status.gateway,
                    status.state.value,
                    status.ts,
                    status.agent_version,
                    json.dumps(status.meters),
                    received_at,
                ),
            )

    def reject(self, *, topic: str, reason: str, detail: str, payload: bytes, received_at: int) -> int:
        """Keep a refused message for inspection (its first MAX_REJECTED_PAYLOAD bytes); returns its id."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO rejected (received_at, topic, reason, detail, payload, payload_size)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (received_at, topic, reason, detail, payload[:MAX_REJECTED_PAYLOAD], len(payload)),
            )
            return int(cursor.lastrowid or 0)

    def close(self) -> None:
        """Close once any running transaction has finished."""
        with self._lock:
            self._db.close()

    def reader(self) -> LedgerReader:
        return LedgerReader(self.path)


class LedgerReader(_Closing):
    """Queries on a read-only connection of its own; open one per request or per thread."""

    def __init__(self, path: Path | str) -> None:
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")

    def ping(self) -> bool:
        """The file is readable and has the ledger's tables."""
        return self._db.execute("SELECT count(*) FROM meters").fetchone() is not None

    def meters(self) -> list[MeterRow]:
        rows = self._db.execute("SELECT * FROM meters ORDER BY meter_id").fetchall()
        return [MeterRow(*row) for row in rows]

    def meter(self, meter_id: str) -> MeterRow | None:
        row = self._db.execute("SELECT * FROM meters WHERE meter_id = ?", (meter_id,)).fetchone()
        return MeterRow(*row) if row else None

    def latest(self, meter_id: str) -> LatestRow | None:
        row = self._db.execute("SELECT * FROM latest WHERE meter_id = ?", (meter_id,)).fetchone()
        if row is None:
            return None
        meter, ts, values, quality, value_quality, clock = row
        return LatestRow(
            meter_id=meter,
            ts=ts,
            values=json.loads(values),
            quality=Quality(quality),
            value_quality={k: Quality(v) for k, v in json.loads(value_quality).items()},
            clock=ClockState(clock),
        )

    def intervals(self, meter_id: str, start_ms: int, end_ms: int) -> list[IntervalRow]:
        """Buckets that overlap [start_ms, end_ms), oldest first."""
        rows = self._db.execute(
            "SELECT * FROM intervals WHERE meter_id = ? AND start_ms > ? AND start_ms < ? ORDER BY start_ms",
            (meter_id, start_ms - INTERVAL_MS, end_ms),
        ).fetchall()
        return [IntervalRow(*row) for row in rows]

    def readings(self, meter_id: str, start_ms: int, end_ms: int) -> list[ReadingRow]:
        """Stored readings with start_ms <= ts < end_ms, oldest first."""
        rows = self._db.execute(
            'SELECT meter_id, ts, "values", quality, clock FROM readings'
            " WHERE meter_id = ? AND ts >= ? AND ts < ? ORDER BY ts",
            (meter_id, start_ms, end_ms),
        ).fetchall()
        return [ReadingRow(m, ts, json.loads(v), Quality(q), ClockState(c)) for m, ts, v, q, c in rows]

    def counter_events(self, meter_id: str) -> list[CounterEvent]:
        rows = self._db.execute(
            "SELECT * FROM counter_events WHERE meter_id = ? ORDER BY ts, quantity", (meter_id,)
        ).fetchall()
        return [CounterEvent(m, q, CounterEventKind(k), *rest) for m, q, k, *rest in rows]

    def rejected(self, limit: int = 100) -> list[RejectedRow]:
        """The most recent refused messages, newest first."""
        rows = self._db.execute("SELECT * FROM rejected ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [RejectedRow(*row) for row in rows]

    def gateways(self) -> list[GatewayRow]:
        rows = self._db.execute("SELECT * FROM gateways ORDER BY site, gateway").fetchall()
        return [GatewayRow(s, g, st, ts, v, json.loads(m), r) for s, g, st, ts, v, m, r in rows]


def _insert_reading(db: sqlite3.Connection, reading: Reading) -> bool:
    """Store one reading unless (meter, ts) is already there; True when it was new."""
    cursor = db.execute(
        _INSERT_READING,
        (
            reading.meter,
            reading.ts,
            reading.values.get(ENERGY_IMPORT),
            reading.values.get(ENERGY_EXPORT),
            reading.values.get(ACTIVE_POWER),
            json.dumps(reading.values),
            reading.quality.value,
            reading.clock.value,
        ),
    )
    return cursor.rowcount == 1


def _by_meter(readings: list[Reading]) -> dict[str, list[Reading]]:
    grouped: dict[str, list[Reading]] = {}
    for reading in readings:
        grouped.setdefault(reading.meter, []).append(reading)
    return grouped


def _upsert_latest(db: sqlite3.Connection, reading: Reading) -> None:
    db.execute(
        'INSERT INTO latest (meter_id, ts, "values", quality, value_quality, clock)'
        ' SELECT meter_id, ts, "values", quality, ?, clock FROM readings WHERE meter_id = ? AND ts = ?'
        ' ON CONFLICT (meter_id) DO UPDATE SET ts = excluded.ts, "values" = excluded."values",'
        " quality = excluded.quality, value_quality = excluded.value_quality, clock = excluded.clock"
        " WHERE excluded.ts > latest.ts",
        (json.dumps({k: v.value for k, v in reading.value_quality.items()}), reading.meter, reading.ts),
    )


def _upsert_meter(db: sqlite3.Connection, batch: ReadingsBatch, readings: list[Reading]) -> None:
    """Where a meter is (site, gateway, profile) follows its newest reading; first/last seen widen."""
    newest = max(readings, key=lambda r: r.ts)
    first = min(r.ts for r in readings)
    db.execute(
        "INSERT INTO meters VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
        " site = iif(excluded.last_seen >= meters.last_seen, excluded.site, meters.site),"
        " gateway = iif(excluded.last_seen >= meters.last_seen, excluded.gateway, meters.gateway),"
        " profile = iif(excluded.last_seen >= meters.last_seen, excluded.profile, meters.profile),"
        " first_seen = min(meters.first_seen, excluded.first_seen),"
        " last_seen = max(meters.last_seen, excluded.last_seen)",
        (newest.meter, batch.site, batch.gateway, newest.profile, first, newest.ts),
    )


def _add_to_intervals(db: sqlite3.Connection, reading: Reading) -> int:
    """Fold a newly stored trusted reading into its meter's intervals and counter events.

    The reading is a sample of its bucket. For each counter it carries, the step between its stored
    neighbours (if it lands between two) is taken out and the steps from the previous reading to it and
    from it to the next are put in. Returns the change in the number of resets.
    """
    max_kw = reading.values.get(ACTIVE_POWER)
    db.execute(
        _ADD_SAMPLE_SQL,
        (reading.meter, bucket_start(reading.ts), None if max_kw is None else max_kw / 1000),
    )
    resets = 0
    for quantity in COUNTERS:
        value = reading.values.get(quantity)
        if value is None:
            continue
        new = CounterSample(reading.ts, value)
        prev = nxt = None
        for ts, stored in db.execute(_NEIGHBOURS_SQL[quantity], {"meter": reading.meter, "ts": reading.ts}):
            if ts < reading.ts:
                prev = CounterSample(ts, stored)
            else:
                nxt = CounterSample(ts, stored)
        if prev is not None and nxt is not None:
            resets += _apply_step(db, reading.meter, quantity, CounterStep(prev, nxt), -1)
        if prev is not None:
            resets += _apply_step(db, reading.meter, quantity, CounterStep(prev, new), 1)
        if nxt is not None:
            resets += _apply_step(db, reading.meter, quantity, CounterStep(new, nxt), 1)
    return resets


def _apply_step(
    db: sqlite3.Connection, meter_id: str, quantity: str, step: CounterStep, sign: Literal[1, -1]
) -> int:
    """Add (sign 1) or take out (sign -1) a step's energy and its counter event; returns its resets."""
    db.executemany(
        _ADD_ENERGY_SQL[quantity], [(meter_id, bucket, sign * share) for bucket, share in step.shares()]
    )
    if (event := _event(meter_id, quantity, step)) is None:
        return 0
    if sign > 0:
        db.execute(
            "INSERT INTO counter_events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (meter_id, quantity, event.kind.value, event.prev_ts, event.prev_value, event.ts, event.value),
        )
    else:
        db.execute(
            "DELETE FROM counter_events WHERE meter_id = ? AND quantity = ? AND ts = ?",
            (meter_id, quantity, event.ts),
        )
    return sign * (event.kind is CounterEventKind.RESET)


def _event(meter_id: str, quantity: str, step: CounterStep) -> CounterEvent | None:
    """The event a step is, if any: a reset (also across a gap), else a gap."""
    if step.reset:
        kind = CounterEventKind.RESET
    elif step.gap:
        kind = CounterEventKind.GAP
    else:
        return None
    return CounterEvent(
        meter_id, quantity, kind, step.start.ts, step.start.value, step.end.ts, step.end.value
    )
