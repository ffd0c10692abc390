"""The ledger: the collector's durable record in SQLite (WAL), and the source the API reads.

:class:`Ledger` is the single writer. Its methods are synchronous and serialised by a lock; async
callers run them with ``asyncio.to_thread``. :class:`LedgerReader` opens its own read-only connection,
so API requests read concurrently with ingestion (WAL lets readers and one writer overlap).

Every sink is idempotent on (meter, ts): a reading that is already stored is ignored and counted, so an
at-least-once resend never double-counts energy. Intervals are kept up to date step by step: a new
reading of a counter either extends the series (its step from the previous reading is added) or lands
between two stored readings, whose step prev->next is taken out again and replaced by prev->new and
new->next. A late or out-of-order reading costs a couple of indexed look-ups and gives the in-order result
up to floating-point rounding. The common case, a reading newer than every stored one of its meter, costs
none: the writer remembers each meter's newest reading and counter samples (:class:`_MeterState`, loaded
lazily, forgotten on rollback). A transaction sums what its readings add to each bucket in memory and
upserts each bucket once, just before it commits; appended rows go in with one executemany. Steps left out of
intervals (a counter going backwards, a gap longer than a day) are kept in ``counter_events``. Readings
stamped by a gateway whose clock was not synchronised are stored but kept out of intervals, because their
time could put energy in the wrong bucket; the counter being cumulative, the energy is not lost but
attributed by the trusted readings around them. (Since quarantine, unsynchronised readings no
longer reach ``readings``; the filter stays for ledgers written before.)

Nothing lost, nothing counted twice: :meth:`Ledger.store` commits a group of MQTT messages in one
transaction (the ingestor acknowledges them only afterwards). A batch whose (site, gateway, spool_id, seq)
was seen is skipped whole; a jump in seq is a gap (batches the gateway never delivered) kept in
``seq_gaps``. Readings stamped by an unsynchronised clock never get into ``readings`` at a wrong time:
they wait in ``quarantine`` until the gateway's clock anchor for their boot re-dates them. A clock that
says it is synchronised but has stepped away from its boot's offset (UTC minus boottime: the anchor, else
the boot's first reading) is caught by the readings' monotonic time: they are re-dated by it and the
span goes to ``clock_steps``, which detection reports as an untrusted clock. With a TSDB
configured, every newly stored reading is also written, as line protocol, to ``tsdb_outbox`` in the same
transaction; the TSDB writer drains it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from collector import line_protocol
from collector.detectors.series import Sample
from collector.intervals import INTERVAL_MS, CounterSample, CounterStep, bucket_start
from kilowatch.mqtt_contract import (
    ClockState,
    GatewayEvent,
    GatewayEventKind,
    GatewayStatus,
    Quality,
    Reading,
    ReadingsBatch,
)
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
-- Each change of a gateway's state (a birth, a last will), in the order the collector received them.
CREATE TABLE IF NOT EXISTS gateway_states (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, received_at, state)
) WITHOUT ROWID;
-- spool is '' for agents that send no spool_id.
CREATE TABLE IF NOT EXISTS batches (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    spool TEXT NOT NULL,
    seq INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, spool, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_gaps (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    spool TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    detected_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, spool, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clock_anchors (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    offset_ms INTEGER NOT NULL,
    synced_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS boot_clocks (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    offset_ms INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clock_steps (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    start_ts INTEGER NOT NULL,
    end_ts INTEGER NOT NULL,
    step_ms INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, start_ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT,
    mono_ms INTEGER,
    meter_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    reading TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS quarantine_once
    ON quarantine (meter_id, ts, coalesce(boot_id, ''), coalesce(mono_ms, -1));
CREATE INDEX IF NOT EXISTS quarantine_by_boot ON quarantine (site, gateway, boot_id);
CREATE TABLE IF NOT EXISTS gateway_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    readings INTEGER NOT NULL,
    oldest_ts INTEGER,
    newest_ts INTEGER,
    detail TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (site, gateway, ts, kind, readings)
);
CREATE TABLE IF NOT EXISTS tsdb_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lines TEXT NOT NULL,
    points INTEGER NOT NULL
);
"""

# Column names below come from the COUNTERS constant, never from input.
_READING_COLUMNS = f'meter_id, ts, {ENERGY_IMPORT}, {ENERGY_EXPORT}, {ACTIVE_POWER}, "values", quality, clock'
_INSERT_READING = f"INSERT OR IGNORE INTO readings ({_READING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
# Appended readings are known to be new (see _MeterState): a plain INSERT, which fails loudly (and rolls
# the group back) rather than silently ignore a row should that knowledge ever be wrong.
_APPEND_READING = f"INSERT INTO readings ({_READING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
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
_NEWEST_SQL = {
    q: f"SELECT ts, {q} FROM readings WHERE meter_id = ? AND {q} IS NOT NULL AND {_TRUSTED}"  # noqa: S608
    " ORDER BY ts DESC LIMIT 1"
    for q in COUNTERS
}
# What one transaction adds to one bucket, in one statement: each energy (NULL: no step covers the bucket
# in this transaction), the largest kW and the number of samples. Taking a step out can leave rounding
# residue; energy is never negative, so it stops at 0. SQLite's max(a, b) is NULL when either is: an
# energy the transaction does not touch keeps its value, and max_kw keeps the known one.
_ADD_TO_BUCKET_SQL = (
    f"INSERT INTO intervals (meter_id, start_ms, {ENERGY_IMPORT}, {ENERGY_EXPORT}, max_kw, samples)"  # noqa: S608
    " VALUES (?1, ?2, max(?3, 0.0), max(?4, 0.0), ?5, ?6) ON CONFLICT (meter_id, start_ms) DO UPDATE SET"
    f" {ENERGY_IMPORT} = coalesce(max(coalesce({ENERGY_IMPORT}, 0.0) + ?3, 0.0), {ENERGY_IMPORT}),"
    f" {ENERGY_EXPORT} = coalesce(max(coalesce({ENERGY_EXPORT}, 0.0) + ?4, 0.0), {ENERGY_EXPORT}),"
    " max_kw = coalesce(max(max_kw, ?5), max_kw, ?5), samples = samples + ?6"
)
_UPSERT_LATEST_SQL = (
    'INSERT INTO latest (meter_id, ts, "values", quality, value_quality, clock) VALUES (?, ?, ?, ?, ?, ?)'
    ' ON CONFLICT (meter_id) DO UPDATE SET ts = excluded.ts, "values" = excluded."values",'
    " quality = excluded.quality, value_quality = excluded.value_quality, clock = excluded.clock"
    " WHERE excluded.ts > latest.ts"
)
_UPSERT_METER_SQL = (
    "INSERT INTO meters VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
    " site = iif(excluded.last_seen >= meters.last_seen, excluded.site, meters.site),"
    " gateway = iif(excluded.last_seen >= meters.last_seen, excluded.gateway, meters.gateway),"
    " profile = iif(excluded.last_seen >= meters.last_seen, excluded.profile, meters.profile),"
    " first_seen = min(meters.first_seen, excluded.first_seen),"
    " last_seen = max(meters.last_seen, excluded.last_seen)"
)
_BUCKET_ENERGY = {q: i for i, q in enumerate(COUNTERS)}
"""Index of each counter's energy in a pending bucket: [import, export, max_kw, samples]."""
_BUCKET_MAX_KW, _BUCKET_SAMPLES = 2, 3


class QuarantineReason(StrEnum):
    """Why a reading waits in quarantine; the ``reason`` column and metric label."""

    AWAITING_ANCHOR = "awaiting_clock_anchor"
    NO_MONOTONIC_TIME = "no_monotonic_time"

    @property
    def detail(self) -> str:
        return _REASON_DETAIL[self]


_REASON_DETAIL = {
    QuarantineReason.AWAITING_ANCHOR: "stamped by an unsynchronised clock; waiting for the gateway's clock "
    "anchor for its boot to re-date it",
    QuarantineReason.NO_MONOTONIC_TIME: "no monotonic time to re-date it",
}


@dataclass(frozen=True)
class RejectedMessage:
    """A refused MQTT message, kept for inspection (its first MAX_REJECTED_PAYLOAD bytes)."""

    topic: str
    reason: str
    detail: str
    payload: bytes


Item = ReadingsBatch | GatewayStatus | GatewayEvent | RejectedMessage
"""What :meth:`Ledger.store` takes: a validated message, or a refused one."""


@dataclass(frozen=True)
class IngestResult:
    """What one message did to the ledger."""

    accepted: int = 0
    """Readings newly stored (corrected ones included)."""
    duplicates: int = 0
    """Readings ignored because that (meter, ts) was already stored, or their whole batch was."""
    counter_resets: int = 0
    """Energy counters newly found going backwards."""
    duplicate_batch: bool = False
    """The batch's (site, gateway, spool_id, seq) was seen before: a redelivery."""
    missing_batches: int = 0
    """Change in the number of batches known missing (a new gap adds, a late batch filling one takes)."""
    quarantined: dict[QuarantineReason, int] = field(default_factory=dict)
    """Change in quarantined readings by reason (re-dated ones leave it)."""
    corrected: int = 0
    """Unsynchronised readings re-dated from the gateway's clock anchor and stored."""
    clock_stepped: int = 0
    """Readings of a synchronised clock that had stepped away from its boot's offset, re-dated."""
    new_clock_step: bool = False
    """They began a new span of the gateway's clock steps."""
    outbox_rows: int = 0
    outbox_points: int = 0
    """Rows and points added to the TSDB outbox."""
    new_event: bool = False
    """A gateway event stored for the first time (a redelivered one is not)."""


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


@dataclass(frozen=True)
class QuarantineRow:
    id: int
    site: str
    gateway: str
    boot_id: str | None
    mono_ms: int | None
    meter_id: str
    ts: int
    """As stamped by the unsynchronised clock."""
    reading: Reading
    reason: QuarantineReason
    received_at: int


@dataclass(frozen=True)
class SeqGapRow:
    """Batches ``first_seq..last_seq`` of a spool that never arrived."""

    site: str
    gateway: str
    spool_id: str | None
    first_seq: int
    last_seq: int
    detected_at: int


@dataclass(frozen=True)
class GatewayEventRow:
    id: int
    site: str
    gateway: str
    ts: int
    kind: GatewayEventKind
    readings: int
    oldest_ts: int | None
    newest_ts: int | None
    detail: str
    received_at: int


@dataclass(frozen=True)
class OutboxRow:
    id: int
    lines: str
    points: int


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


@dataclass
class _MeterState:
    """What the writer knows of one meter's stored readings, so that the common case, a reading newer than
    every stored one, needs no look-up: it is new (no (meter, ts) clash) and, for each counter, its
    previous neighbour is the newest stored sample and it has no next one.

    Loaded lazily from the ledger, kept up to date by the writer (the only one), and dropped whole when a
    transaction rolls back.
    """

    newest_ts: int | None
    """ts of the newest stored reading, whatever its clock; None: none stored."""
    counters: dict[str, CounterSample | None] = field(default_factory=dict)
    """The newest stored trusted sample of each counter (None: none stored); a counter not in here is
    not loaded yet."""


_NewReading = tuple[Reading, list[tuple[str, str]], str]
"""A newly stored reading, its values formatted for the line protocol, and as JSON."""


class _Pending:
    """What a transaction has still to write: appended readings (inserted with one executemany before
    anything reads ``readings``); what each (meter, bucket) gains, and each meter's newest new reading and
    first/last seen, upserted once before commit instead of once per reading or message."""

    def __init__(self) -> None:
        self.readings: list[tuple[object, ...]] = []
        self.buckets: dict[tuple[str, int], list[Any]] = {}
        """(meter, bucket start) -> [import kWh, export kWh, max kW, samples]."""
        self.latest: dict[str, tuple[Reading, str]] = {}
        """meter -> its newest new reading and its values as JSON."""
        self.meters: dict[str, tuple[str, str, str, int, int]] = {}
        """meter -> (site, gateway, profile) of its newest reading, first and last ts seen."""


class Ledger(_Closing):
    """The single writer. Creates the file and its tables when missing.

    Args:
        path: The SQLite file.
        outbox: Also record stored readings in the TSDB outbox (a TSDB is configured).
    """

    def __init__(self, path: Path | str, *, outbox: bool = False) -> None:
        self.path = Path(path)
        self._outbox = outbox
        """Whether stored readings also go to the TSDB outbox (only when a TSDB is configured)."""
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._meters: dict[str, _MeterState] = {}
        self._boot_offsets: dict[tuple[str, str, str], int] = {}
        """Each boot's offset from ``boot_clocks``, kept so a batch costs no look-up (forgotten on rollback)."""
        self._pending = _Pending()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + synchronous=FULL: each commit (one per group of messages) fsyncs the WAL before the
            # messages are acknowledged, so not even a power cut can undo readings the broker was told
            # are stored. NORMAL would skip that fsync and could lose acknowledged groups on power loss;
            # measured here, FULL cost nothing visible at 50 messages per commit (22-25k readings/s).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB of page cache for the writer
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, writing what is pending first; on any failure ROLLBACK and forget
        the in-memory meter states, which may describe rows that are no longer there."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._pending = _Pending()
            try:
                yield self._db
                self._flush(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._meters.clear()
                self._boot_offsets.clear()
                self._pending = _Pending()
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise

    def store(self, items: Sequence[Item], *, received_at: int) -> list[IngestResult]:
        """Store a group of messages in one transaction (all or none); one result per item, in order."""
        with self._transaction() as db:
            return [self._store_item(db, item, received_at) for item in items]

    def ingest(self, batch: ReadingsBatch, *, received_at: int = 0) -> IngestResult:
        """Store one batch in a transaction of its own."""
        [result] = self.store([batch], received_at=received_at)
        return result

    def record_status(self, status: GatewayStatus, *, received_at: int) -> IngestResult:
        """Keep a gateway's last status; its clock anchor re-dates quarantined readings of that boot."""
        [result] = self.store([status], received_at=received_at)
        return result

    def reject(self, *, topic: str, reason: str, detail: str, payload: bytes, received_at: int) -> None:
        """Keep a refused message for inspection (its first MAX_REJECTED_PAYLOAD bytes)."""
        self.store([RejectedMessage(topic, reason, detail, payload)], received_at=received_at)

    def outbox_delete(self, last_id: int) -> None:
        """Forget outbox rows up to `last_id`, once the TSDB has taken them."""
        with self._transaction() as db:
            db.execute("DELETE FROM tsdb_outbox WHERE id <= ?", (last_id,))

    def _store_item(self, db: sqlite3.Connection, item: Item, received_at: int) -> IngestResult:
        if isinstance(item, ReadingsBatch):
            return self._ingest(db, item, received_at)
        if isinstance(item, GatewayStatus):
            return self._record_status(db, item, received_at)
        if isinstance(item, GatewayEvent):
            return IngestResult(new_event=_record_event(db, item, received_at))
        db.execute(
            "INSERT INTO rejected (received_at, topic, reason, detail, payload, payload_size)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (received_at, item.topic, item.reason, item.detail, item.payload[:MAX_REJECTED_PAYLOAD],
             len(item.payload)),
        )  # fmt: skip
        return IngestResult()

    def _ingest(self, db: sqlite3.Connection, batch: ReadingsBatch, received_at: int) -> IngestResult:
        """A batch: skipped whole when seen; else its trusted readings stored, unsynchronised ones
        re-dated (anchor known) or quarantined.

        Without a spool_id (older agents) seq restarts with the agent, so a seen seq proves nothing: the
        readings go through (meter, ts) dedup, and no gaps are tracked.
        """
        spool = batch.spool_id or ""
        key = (batch.site, batch.gateway, spool)
        seen = db.execute(
            "SELECT 1 FROM batches WHERE site = ? AND gateway = ? AND spool = ? AND seq = ?",
            (*key, batch.seq),
        ).fetchone()
        if seen and batch.spool_id is not None:
            return IngestResult(duplicates=len(batch.readings), duplicate_batch=True)
        missing = 0 if seen or batch.spool_id is None else _track_seq(db, key, batch.seq, received_at)
        db.execute(
            "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)",
            (*key, batch.seq, len(batch.readings), received_at),
        )
        offset = (
            None if batch.boot_id is None else _anchor_offset(db, batch.site, batch.gateway, batch.boot_id)
        )
        reference = offset
        trusted: list[Reading] = []
        quarantined: dict[QuarantineReason, int] = {}
        corrected = 0
        stepped: list[Reading] = []
        step_ms = 0
        for reading in batch.readings:
            if reading.clock is not ClockState.UNSYNCED:
                if batch.boot_id is not None and reading.mono_ms is not None:
                    if reference is None:
                        reference = self._boot_offset(db, batch, reading.ts - reading.mono_ms)
                    step = reading.ts - reading.mono_ms - reference
                    if abs(step) > CLOCK_STEP_TOLERANCE_MS:
                        step_ms = step
                        reading = _redate(reading, reference)
                        stepped.append(reading)
                trusted.append(reading)
            elif offset is not None and reading.mono_ms is not None:
                trusted.append(_redate(reading, offset))
                corrected += 1
            else:
                reason = (
                    QuarantineReason.NO_MONOTONIC_TIME
                    if batch.boot_id is None or reading.mono_ms is None
                    else QuarantineReason.AWAITING_ANCHOR
                )
                if _quarantine(db, batch, reading, reason, received_at):
                    quarantined[reason] = quarantined.get(reason, 0) + 1
        stored = self._store_readings(db, batch.site, batch.gateway, trusted)
        duplicates = len(batch.readings) - stored.accepted - sum(quarantined.values())
        new_step = bool(stepped) and _record_clock_step(db, batch, stepped, step_ms)
        return IngestResult(
            clock_stepped=len(stepped),
            new_clock_step=new_step,
            accepted=stored.accepted,
            duplicates=duplicates,
            counter_resets=stored.counter_resets,
            duplicate_batch=bool(seen) and stored.accepted == 0,
            missing_batches=missing,
            quarantined=quarantined,
            corrected=corrected,
            outbox_rows=stored.outbox_rows,
            outbox_points=stored.outbox_points,
        )

    def _store_readings(
        self, db: sqlite3.Connection, site: str, gateway: str, readings: list[Reading]
    ) -> IngestResult:
        """Trusted readings into readings, meters, latest, intervals and the outbox.

        One at a time, in time order (stable: the first of two equal readings is kept), so each finds its
        stored neighbours, earlier ones of this transaction included. Most of them are newer than anything
        stored for their meter: they only append (no look-up, see :class:`_MeterState`), and their rows
        wait in the pending list until something has to read ``readings``. Any other reading takes the
        general path: INSERT OR IGNORE, then the neighbour look-ups of :meth:`_add_to_intervals`.
        """
        new: list[_NewReading] = []
        resets = 0
        pending = self._pending
        for reading in sorted(readings, key=_ts):
            state = self._meter_state(db, reading.meter)
            formatted = line_protocol.formatted_values(reading.values)
            values_json = _values_json(formatted)
            values = reading.values
            row = (
                reading.meter,
                reading.ts,
                values.get(ENERGY_IMPORT),
                values.get(ENERGY_EXPORT),
                values.get(ACTIVE_POWER),
                values_json,
                reading.quality.value,
                reading.clock.value,
            )
            if state.newest_ts is None or reading.ts > state.newest_ts:
                pending.readings.append(row)
                state.newest_ts = reading.ts
            else:
                self._flush_readings(db)
                if db.execute(_INSERT_READING, row).rowcount != 1:
                    continue
            new.append((reading, formatted, values_json))
            resets += self._add_to_intervals(db, reading, state)
        self._pend_meters(site, gateway, new)
        points = (
            [line_protocol.line(site, gateway, r, formatted) for r, formatted, _ in new if formatted]
            if self._outbox
            else []
        )
        if points:
            db.execute(
                "INSERT INTO tsdb_outbox (lines, points) VALUES (?, ?)", ("\n".join(points), len(points))
            )
        return IngestResult(
            accepted=len(new),
            duplicates=len(readings) - len(new),
            counter_resets=resets,
            outbox_rows=int(bool(points)),
            outbox_points=len(points),
        )

    def _meter_state(self, db: sqlite3.Connection, meter: str) -> _MeterState:
        state = self._meters.get(meter)
        if state is None:
            (newest,) = db.execute("SELECT max(ts) FROM readings WHERE meter_id = ?", (meter,)).fetchone()
            state = self._meters[meter] = _MeterState(newest)
        return state

    def _newest_sample(
        self, db: sqlite3.Connection, meter: str, state: _MeterState, quantity: str
    ) -> CounterSample | None:
        if quantity not in state.counters:
            self._flush_readings(db)
            row = db.execute(_NEWEST_SQL[quantity], (meter,)).fetchone()
            state.counters[quantity] = None if row is None else CounterSample(*row)
        return state.counters[quantity]

    def _pend_meters(self, site: str, gateway: str, new: list[_NewReading]) -> None:
        """Note each meter's newest new reading (for `latest`) and where it is (for `meters`).

        Where a meter is (site, gateway, profile) follows its newest reading (of a message: the first with
        the highest ts; of a transaction: the last message with the highest ts, as one upsert per message
        would leave it); first/last seen widen.
        """
        by_meter: dict[str, list[_NewReading]] = {}
        for item in new:
            by_meter.setdefault(item[0].meter, []).append(item)
        latest, meters = self._pending.latest, self._pending.meters
        for meter, of_meter in by_meter.items():
            newest, _, values = max(of_meter, key=lambda item: item[0].ts)
            first = min(item[0].ts for item in of_meter)
            kept = latest.get(meter)
            if kept is None or newest.ts > kept[0].ts:
                latest[meter] = (newest, values)
            where = meters.get(meter)
            if where is None:
                meters[meter] = (site, gateway, newest.profile, first, newest.ts)
            elif newest.ts >= where[4]:
                meters[meter] = (site, gateway, newest.profile, min(first, where[3]), newest.ts)
            else:
                meters[meter] = (*where[:3], min(first, where[3]), where[4])

    def _flush_readings(self, db: sqlite3.Connection) -> None:
        if self._pending.readings:
            db.executemany(_APPEND_READING, self._pending.readings)
            self._pending.readings = []

    def _flush(self, db: sqlite3.Connection) -> None:
        """Write what the transaction has pending (before it commits)."""
        pending = self._pending
        self._flush_readings(db)
        if pending.buckets:
            db.executemany(
                _ADD_TO_BUCKET_SQL,
                [(meter, start, *sums) for (meter, start), sums in pending.buckets.items()],
            )
        if pending.latest:
            db.executemany(
                _UPSERT_LATEST_SQL,
                [
                    (
                        meter,
                        reading.ts,
                        values,
                        reading.quality.value,
                        json.dumps({k: v.value for k, v in reading.value_quality.items()}),
                        reading.clock.value,
                    )
                    for meter, (reading, values) in pending.latest.items()
                ],
            )
        if pending.meters:
            db.executemany(_UPSERT_METER_SQL, [(meter, *where) for meter, where in pending.meters.items()])
        self._pending = _Pending()

    def _bucket(self, meter: str, ts: int) -> list[Any]:
        key = (meter, bucket_start(ts))
        sums = self._pending.buckets.get(key)
        if sums is None:
            sums = self._pending.buckets[key] = [None, None, None, 0]
        return sums

    def _add_to_intervals(self, db: sqlite3.Connection, reading: Reading, state: _MeterState) -> int:
        """Fold a newly stored trusted reading into its meter's intervals and counter events.

        The reading is a sample of its bucket. For each counter it carries, the step between its stored
        neighbours (if it lands between two) is taken out and the steps from the previous reading to it and
        from it to the next are put in. A reading newer than the counter's newest stored sample has that
        sample as its previous neighbour and no next one: no look-up. Returns the change in the number of
        resets.
        """
        meter, ts = reading.meter, reading.ts
        sums = self._bucket(meter, ts)
        sums[_BUCKET_SAMPLES] += 1
        power = reading.values.get(ACTIVE_POWER)
        if power is not None:
            kw, max_kw = power / 1000, sums[_BUCKET_MAX_KW]
            sums[_BUCKET_MAX_KW] = kw if max_kw is None else max(max_kw, kw)
        resets = 0
        for quantity in COUNTERS:
            value = reading.values.get(quantity)
            if value is None:
                continue
            new = CounterSample(ts, value)
            newest = self._newest_sample(db, meter, state, quantity)
            if newest is None or ts > newest.ts:
                state.counters[quantity] = new
                if newest is not None:
                    resets += self._apply_step(db, meter, quantity, CounterStep(newest, new), 1)
                continue
            self._flush_readings(db)
            prev = nxt = None
            for stored_ts, stored in db.execute(_NEIGHBOURS_SQL[quantity], {"meter": meter, "ts": ts}):
                if stored_ts < ts:
                    prev = CounterSample(stored_ts, stored)
                else:
                    nxt = CounterSample(stored_ts, stored)
            if prev is not None and nxt is not None:
                resets += self._apply_step(db, meter, quantity, CounterStep(prev, nxt), -1)
            if prev is not None:
                resets += self._apply_step(db, meter, quantity, CounterStep(prev, new), 1)
            if nxt is not None:
                resets += self._apply_step(db, meter, quantity, CounterStep(new, nxt), 1)
        return resets

    def _apply_step(
        self, db: sqlite3.Connection, meter_id: str, quantity: str, step: CounterStep, sign: Literal[1, -1]
    ) -> int:
        """Add (sign 1) or take out (sign -1) a step's energy and its counter event; returns its resets.

        The energy is summed per bucket in memory and upserted at commit; the event is written at once.
        """
        index = _BUCKET_ENERGY[quantity]
        for start, share in step.shares():
            sums = self._bucket(meter_id, start)
            energy = sums[index]
            sums[index] = sign * share if energy is None else energy + sign * share
        if (event := _event(meter_id, quantity, step)) is None:
            return 0
        if sign > 0:
            db.execute(
                "INSERT INTO counter_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    meter_id,
                    quantity,
                    event.kind.value,
                    event.prev_ts,
                    event.prev_value,
                    event.ts,
                    event.value,
                ),
            )
        else:
            db.execute(
                "DELETE FROM counter_events WHERE meter_id = ? AND quantity = ? AND ts = ?",
                (meter_id, quantity, event.ts),
            )
        return sign * (event.kind is CounterEventKind.RESET)

    def _boot_offset(self, db: sqlite3.Connection, batch: ReadingsBatch, seen_ms: int) -> int:
        """The boot's clock offset when no anchor gave it: the first synchronised reading's, kept."""
        assert batch.boot_id is not None
        key = (batch.site, batch.gateway, batch.boot_id)
        if key not in self._boot_offsets:
            db.execute("INSERT OR IGNORE INTO boot_clocks VALUES (?, ?, ?, ?)", (*key, seen_ms))
            row = db.execute(
                "SELECT offset_ms FROM boot_clocks WHERE site = ? AND gateway = ? AND boot_id = ?", key
            ).fetchone()
            self._boot_offsets[key] = int(row[0])
        return self._boot_offsets[key]

    def _record_status(self, db: sqlite3.Connection, status: GatewayStatus, received_at: int) -> IngestResult:
        """The last status to arrive wins (a last will is older than the birth it follows); a change of
        state is also kept in ``gateway_states``."""
        previous = db.execute(
            "SELECT state FROM gateways WHERE site = ? AND gateway = ?", (status.site, status.gateway)
        ).fetchone()
        if previous is None or previous[0] != status.state.value:
            db.execute(
                "INSERT OR IGNORE INTO gateway_states VALUES (?, ?, ?, ?, ?)",
                (status.site, status.gateway, received_at, status.state.value, status.ts),
            )
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
        anchor = status.clock_anchor
        if anchor is None:
            return IngestResult()
        db.execute(
            "INSERT OR REPLACE INTO clock_anchors VALUES (?, ?, ?, ?, ?)",
            (status.site, status.gateway, anchor.boot_id, anchor.offset_ms, anchor.synced_at),
        )
        rows = db.execute(
            "DELETE FROM quarantine WHERE site = ? AND gateway = ? AND boot_id = ? AND mono_ms IS NOT NULL"
            " RETURNING reading",
            (status.site, status.gateway, anchor.boot_id),
        ).fetchall()
        redated = [_redate(Reading.model_validate_json(reading), anchor.offset_ms) for (reading,) in rows]
        stored = self._store_readings(db, status.site, status.gateway, redated)
        return IngestResult(
            accepted=stored.accepted,
            duplicates=stored.duplicates,
            counter_resets=stored.counter_resets,
            quarantined={QuarantineReason.AWAITING_ANCHOR: -len(rows)} if rows else {},
            corrected=len(rows),
            outbox_rows=stored.outbox_rows,
            outbox_points=stored.outbox_points,
        )

    def close(self) -> None:
        """Close once any running transaction has finished."""
        with self._lock:
            self._db.close()

    def reader(self) -> LedgerReader:
        return LedgerReader(self.path)


_POWER_SQL = (
    f"SELECT ts, {ACTIVE_POWER}, {ENERGY_IMPORT} FROM readings"  # noqa: S608 - column names are constants
    f" WHERE meter_id = ? AND ts >= ? AND ts < ? AND clock != '{ClockState.UNSYNCED.value}'"
    f" AND {ACTIVE_POWER} IS NOT NULL ORDER BY ts"
)


def power_samples(db: sqlite3.Connection, meter_id: str, start_ms: int, end_ms: int) -> list[Sample]:
    """The meter's readings with power in [start_ms, end_ms), oldest first, in kW: what the detectors
    judge (never a reading stamped by an unsynchronised clock)."""
    return [Sample(ts, w / 1000, e) for ts, w, e in db.execute(_POWER_SQL, (meter_id, start_ms, end_ms))]


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

    def power_samples(self, meter_id: str, start_ms: int, end_ms: int) -> list[Sample]:
        return power_samples(self._db, meter_id, start_ms, end_ms)

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

    def quarantine(self, meter_id: str | None = None, limit: int = 100) -> list[QuarantineRow]:
        """Quarantined readings (of one meter, or all), oldest stamp first."""
        rows = self._db.execute(
            "SELECT * FROM quarantine WHERE ?1 IS NULL OR meter_id = ?1 ORDER BY ts, id LIMIT ?2",
            (meter_id, limit),
        ).fetchall()
        return [
            QuarantineRow(i, s, g, b, m, meter, ts, Reading.model_validate_json(r), QuarantineReason(q), at)
            for i, s, g, b, m, meter, ts, r, q, at in rows
        ]

    def quarantine_counts(self) -> dict[QuarantineReason, int]:
        rows = self._db.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall()
        return {QuarantineReason(reason): n for reason, n in rows}

    def seq_gaps(self) -> list[SeqGapRow]:
        rows = self._db.execute("SELECT * FROM seq_gaps ORDER BY site, gateway, spool, first_seq").fetchall()
        return [SeqGapRow(s, g, sp or None, first, last, at) for s, g, sp, first, last, at in rows]

    def missing_batches(self) -> int:
        """Batches in every open seq gap."""
        (n,) = self._db.execute("SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM seq_gaps").fetchone()
        return int(n)

    def gateway_events(self, limit: int = 100) -> list[GatewayEventRow]:
        """The most recent gateway events, newest first."""
        rows = self._db.execute("SELECT * FROM gateway_events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [GatewayEventRow(i, s, g, ts, GatewayEventKind(k), *rest) for i, s, g, ts, k, *rest in rows]

    def outbox(self, max_points: int) -> list[OutboxRow]:
        """The oldest outbox rows, about `max_points` points' worth (at least one row)."""
        rows: list[OutboxRow] = []
        total = 0
        for row in self._db.execute("SELECT id, lines, points FROM tsdb_outbox ORDER BY id"):
            if rows and total + row[2] > max_points:
                break
            rows.append(OutboxRow(*row))
            total += row[2]
        return rows

    def outbox_backlog(self) -> tuple[int, int]:
        """(rows, points) waiting in the outbox."""
        rows, points = self._db.execute(
            "SELECT count(*), coalesce(sum(points), 0) FROM tsdb_outbox"
        ).fetchone()
        return int(rows), int(points)


def _ts(reading: Reading) -> int:
    return reading.ts


def _values_json(formatted: list[tuple[str, str]]) -> str:
    """What ``json.dumps(values)`` gives, from the values already formatted for the line protocol.

    Quantity names are canonical identifiers (nothing to escape) and values finite floats, which json
    writes with ``float.__repr__`` as :func:`line_protocol.formatted_values` does.
    """
    return "{" + ", ".join([f'"{name}": {text}' for name, text in formatted]) + "}"


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


def _track_seq(db: sqlite3.Connection, key: tuple[str, str, str], seq: int, received_at: int) -> int:
    """Record the gap a new seq reveals, or close the one a late seq fills; returns the change in missing
    batches. The first seq seen of a spool reveals nothing (the collector may be newer than the spool)."""
    (highest,) = db.execute(
        "SELECT max(seq) FROM batches WHERE site = ? AND gateway = ? AND spool = ?", key
    ).fetchone()
    if highest is None:
        return 0
    if seq > highest + 1:
        db.execute(
            "INSERT INTO seq_gaps VALUES (?, ?, ?, ?, ?, ?)", (*key, highest + 1, seq - 1, received_at)
        )
        return int(seq - highest - 1)
    gap = db.execute(
        "DELETE FROM seq_gaps WHERE site = ? AND gateway = ? AND spool = ? AND first_seq <= ? AND last_seq >= ?"
        " RETURNING first_seq, last_seq, detected_at",
        (*key, seq, seq),
    ).fetchone()
    if gap is None:
        return 0
    first, last, detected_at = gap
    for lo, hi in ((first, seq - 1), (seq + 1, last)):
        if lo <= hi:
            db.execute("INSERT INTO seq_gaps VALUES (?, ?, ?, ?, ?, ?)", (*key, lo, hi, detected_at))
    return -1


def _anchor_offset(db: sqlite3.Connection, site: str, gateway: str, boot_id: str) -> int | None:
    row = db.execute(
        "SELECT offset_ms FROM clock_anchors WHERE site = ? AND gateway = ? AND boot_id = ?",
        (site, gateway, boot_id),
    ).fetchone()
    return None if row is None else int(row[0])


CLOCK_STEP_TOLERANCE_MS = 10_000
"""A synchronised clock differing from its boot's offset (UTC minus boottime) by more than this has been
stepped (a bad time server, a wrong manual setting). Slewing and the gap between stamping a reading and
its monotonic time stay far below it."""
_STEP_MERGE_MS = 10 * 60_000
"""Stepped readings this close in time belong to one span."""


def _record_clock_step(
    db: sqlite3.Connection, batch: ReadingsBatch, stepped: list[Reading], step_ms: int
) -> bool:
    """Fold the re-dated readings' span (the clock `step_ms` off) into the gateway's clock steps; True
    when it began a new span."""
    key = (batch.site, batch.gateway, batch.boot_id)
    start, end = min(r.ts for r in stepped), max(r.ts for r in stepped)
    rows = db.execute(
        "DELETE FROM clock_steps WHERE site = ? AND gateway = ? AND boot_id = ? AND start_ts <= ? AND end_ts >= ?"
        " RETURNING start_ts, end_ts",
        (*key, end + _STEP_MERGE_MS, start - _STEP_MERGE_MS),
    ).fetchall()
    for a, b in rows:
        start, end = min(start, a), max(end, b)
    db.execute("INSERT INTO clock_steps VALUES (?, ?, ?, ?, ?, ?)", (*key, start, end, step_ms))
    return not rows


def _redate(reading: Reading, offset_ms: int) -> Reading:
    """The reading at the time its monotonic clock says, on the anchor's UTC scale."""
    assert reading.mono_ms is not None
    return reading.model_copy(update={"ts": reading.mono_ms + offset_ms, "clock": ClockState.CORRECTED})


def _quarantine(
    db: sqlite3.Connection, batch: ReadingsBatch, reading: Reading, reason: QuarantineReason, received_at: int
) -> bool:
    """Keep an unsynchronised reading aside; False when it already is (a resend)."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO quarantine"
        " (site, gateway, boot_id, mono_ms, meter_id, ts, reading, reason, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            batch.site,
            batch.gateway,
            batch.boot_id,
            reading.mono_ms,
            reading.meter,
            reading.ts,
            reading.model_dump_json(),
            reason.value,
            received_at,
        ),
    )
    return cursor.rowcount == 1


def _record_event(db: sqlite3.Connection, event: GatewayEvent, received_at: int) -> bool:
    """Keep a gateway event; False when it already is (a resend)."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO gateway_events"
        " (site, gateway, ts, kind, readings, oldest_ts, newest_ts, detail, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.site,
            event.gateway,
            event.ts,
            event.kind.value,
            event.readings,
            event.oldest_ts,
            event.newest_ts,
            event.detail,
            received_at,
        ),
    )
    return cursor.rowcount == 1
