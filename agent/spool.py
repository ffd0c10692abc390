"""The agent's durable spool: every batch is on disk from shortly after its poll until the broker
acknowledges it, so a crash, a power cut or a week without network loses no reading.

One SQLite file (WAL, ``synchronous=FULL``: a committed batch survives SIGKILL and power loss) lives for
the whole process; reconnecting to the broker never touches it. It numbers batches (`seq` carries on
across restarts) and names itself with a random `spool_id`, so a resend is recognisably the same batch.

Every commit syncs the disk, and SD cards wear, so :meth:`Spool.append` only buffers: commits come every
``commit_interval_s`` (sooner when :data:`COMMIT_READINGS` readings wait) and carry the deletions of the
batches acknowledged since. A batch is publishable once committed.

Nothing is dropped silently. Over its size or age bound the spool evicts its oldest batches and stores a
``spool_evicted`` event for the collector. A file that is not a sound spool is moved aside (never
deleted) and a fresh spool started, with a ``spool_corrupt`` event that says what could be recovered: the
batches SQLite can still read in the file moved aside are carried over into the fresh spool (new seqs, the
same readings; the collector drops any it already has). SQLite itself would take an empty (0-byte) file
for a new database and silently ignore a write-ahead log whose header is garbage (losing the batches only
it held), so both are checked before SQLite opens the file; one opener at a time, under a lock file
(``<spool>.lock``), so that a file another opener is just creating is never taken for an empty one. When the disk is full new readings are
refused and counted; every commit retries, and once one succeeds ``spool_full`` (with the count) and
``spool_accepting`` events are stored. Events wait in the spool, like batches, until acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from agent.clock import now_ms
from agent.config import SpoolSettings
from kilowatch.clock import redate
from kilowatch.mqtt_contract import ClockState, GatewayEventKind, Reading, SpoolStatus

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a spool file; any other value is a file this code does not understand."""
COMMIT_READINGS = 2000
"""Buffered readings that make a commit due before its interval is up."""
_OPEN_PATIENCE_S = 5.0
"""How long an opener keeps trying a file another process holds locked while it sets the file up."""
HEADROOM_BYTES = 64 * 1024
"""Space a commit must find, after a full disk, before the spool accepts readings again (so it does not
flap between refusing and accepting on the last few free bytes)."""

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL);
INSERT INTO meta VALUES ('spool_id', lower(hex(randomblob(8)))), ('next_seq', 0), ('evicted_readings', 0);
CREATE TABLE batches (
    seq INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    boot_id TEXT,
    readings INTEGER NOT NULL,
    oldest_ts INTEGER NOT NULL,
    newest_ts INTEGER NOT NULL,
    unsynced INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE unpublishable (
    seq INTEGER PRIMARY KEY,
    boot_id TEXT,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    set_aside_ms INTEGER NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    readings INTEGER NOT NULL,
    oldest_ts INTEGER,
    newest_ts INTEGER,
    detail TEXT NOT NULL
);
"""
"""`unsynced`: readings stamped by an unsynchronised clock; `payload`: the JSON list of readings;
`unpublishable`: batches that no longer fit the wire contract, kept for inspection instead of blocking
the queue."""
TABLES = {"meta", "batches", "unpublishable", "events"}

READINGS = TypeAdapter(list[Reading])


class SpoolCorrupt(Exception):
    """The file is not a sound spool of this schema."""


@dataclass(frozen=True)
class SpooledBatch:
    """A committed batch, as the publisher sends it."""

    seq: int
    boot_id: str | None
    payload: bytes
    """The JSON list of its readings."""

    @property
    def readings(self) -> list[Reading]:
        return READINGS.validate_json(self.payload)


@dataclass(frozen=True)
class SpooledEvent:
    """A :class:`~kilowatch.mqtt_contract.GatewayEvent` without its envelope; `id` is None until stored."""

    kind: GatewayEventKind
    ts: int
    readings: int
    oldest_ts: int | None
    newest_ts: int | None
    detail: str
    id: int | None = None


@dataclass
class _Span:
    """Readings counted together: how many, and the event times of the oldest and newest."""

    readings: int = 0
    oldest_ts: int | None = None
    newest_ts: int | None = None

    def add(self, count: int, oldest_ts: int | None, newest_ts: int | None) -> None:
        self.readings += count
        if oldest_ts is not None:
            self.oldest_ts = oldest_ts if self.oldest_ts is None else min(self.oldest_ts, oldest_ts)
        if newest_ts is not None:
            self.newest_ts = newest_ts if self.newest_ts is None else max(self.newest_ts, newest_ts)

    def event(self, kind: GatewayEventKind, detail: str, ts: int | None = None) -> SpooledEvent:
        return SpooledEvent(
            kind, now_ms() if ts is None else ts, self.readings, self.oldest_ts, self.newest_ts, detail
        )


@dataclass
class _Buffered:
    seq: int
    created_ms: int
    readings: list[Reading]


@dataclass
class _Lost:
    """Readings refused since the disk filled up."""

    since_ms: int
    reason: str
    span: _Span = field(default_factory=_Span)


def _redate_unsynced(readings: Sequence[Reading], offset_ms: int) -> tuple[list[Reading], int]:
    """Readings with every unsynced one that has `mono_ms` re-dated to `mono_ms + offset_ms`, and how many."""
    out, changed = [], 0
    for reading in readings:
        if reading.clock is ClockState.UNSYNCED and reading.mono_ms is not None:
            reading = redate(reading, offset_ms)
            changed += 1
        out.append(reading)
    return out, changed


def _row(readings: Sequence[Reading]) -> tuple[int, int, int, int, bytes]:
    """The summary columns and payload of a batch's readings."""
    times = [r.ts for r in readings]
    unsynced = sum(r.clock is ClockState.UNSYNCED for r in readings)
    return len(readings), min(times), max(times), unsynced, READINGS.dump_json(list(readings))


_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_VERSION = 3007000


def _wal_header_sound(header: bytes) -> bool:
    """Whether `header` (a WAL file's first 32 bytes) is a valid SQLite WAL header: magic, version and
    checksum (https://www.sqlite.org/fileformat.html#the_write_ahead_log)."""
    if len(header) < 32:
        return False
    magic, version = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    if magic not in _WAL_MAGIC or version != _WAL_VERSION:
        return False
    order: Literal["big", "little"] = "big" if magic & 1 else "little"
    s0 = s1 = 0
    for i in range(0, 24, 8):
        s0 = (s0 + int.from_bytes(header[i : i + 4], order) + s1) & 0xFFFFFFFF
        s1 = (s1 + int.from_bytes(header[i + 4 : i + 8], order) + s0) & 0xFFFFFFFF
    return (s0, s1) == (int.from_bytes(header[24:28], "big"), int.from_bytes(header[28:32], "big"))


def _unsound_files(path: Path) -> str | None:
    """Why the spool's files cannot be a sound spool though SQLite would open them; None if they may be."""
    if not path.exists():
        return None
    wal = Path(f"{path}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if wal_size:
        with wal.open("rb") as f:
            if not _wal_header_sound(f.read(32)):
                return f"its write-ahead log {wal.name} ({wal_size} bytes) has no valid header"
    if path.stat().st_size == 0 and wal_size == 0:
        return "the file is empty (0 bytes)"
    return None


@contextlib.contextmanager
def _opening_lock(path: Path) -> Iterator[None]:
    """Held while a process inspects, opens, sets up or moves aside the spool file."""
    with Path(f"{path}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class _Salvaged:
    """Batches read from a spool file that was moved aside."""

    batches: list[tuple[str | None, list[Reading]]]
    """(boot_id, readings) of each readable batch, oldest first."""
    unreadable: str | None = None
    """Why (part of) the file could not be read; None when all of it was."""

    @property
    def readings(self) -> int:
        return sum(len(readings) for _, readings in self.batches)


def _salvage(aside: Path) -> _Salvaged:
    """The batches SQLite can read in the file moved aside (immutable: never written, its WAL ignored)."""
    batches: list[tuple[str | None, list[Reading]]] = []
    skipped = 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{aside}?mode=ro&immutable=1", uri=True)) as db:
            rows = db.execute("SELECT boot_id, payload FROM batches ORDER BY seq").fetchall()
    except sqlite3.Error as exc:
        return _Salvaged([], f"no batch readable: {exc}")
    for boot_id, payload in rows:
        try:
            batches.append((boot_id, READINGS.validate_json(payload)))
        except ValueError:
            skipped += 1
    return _Salvaged(batches, f"{skipped} batches unreadable" if skipped else None)


def _aside_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")


class Spool:
    """The SQLite spool file at ``settings.path``, opened (or created, or replaced if corrupt) at once.

    Appends and acknowledgements are in memory until :meth:`flush`; reads see committed batches only.
    Safe to use from the event loop while :meth:`flush` runs in a worker thread.
    """

    def __init__(self, settings: SpoolSettings, *, boot_id: str | None) -> None:
        self.settings = settings
        self.path = settings.path
        self.boot_id = boot_id
        """The boot the readings appended by this process count `mono_ms` from."""
        self._db_lock = threading.Lock()
        """Held while using the connection; taken before `_mem_lock` when both are needed."""
        self._mem_lock = threading.Lock()
        """Held while touching the buffers below."""
        self._buffer: list[_Buffered] = []
        self._buffered_readings = 0
        self._new_events: list[SpooledEvent] = []
        self._acked: set[int] = set()
        self._acked_events: set[int] = set()
        self._lost: _Lost | None = None
        self._offset_ms: int | None = None
        """This boot's clock anchor once known: later unsynced appends (a cycle that started before the
        clock synchronised) are re-dated as they come."""
        self._urgent = asyncio.Event()
        self.lost_readings = 0
        """Readings refused because the spool could not store them, since the process started."""
        self.db = self._open()
        """The SQLite connection (for inspection; use it only through this class otherwise)."""
        self.spool_id: str = self._meta("spool_id")
        self._next_seq: int = self._meta("next_seq")
        self._stored_next_seq: int = self._next_seq
        self._stored = _Span()
        self._stored_batches = 0
        self._stored_events = 0
        self._evicted: int = self._meta("evicted_readings")
        self._refresh_totals()

    # -- opening ----------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if str(self.path) == ":memory:":  # a publisher's spool in tests: no file to check or lock
            return self._connect()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _opening_lock(self.path):
            try:
                if (unsound := _unsound_files(self.path)) is not None:
                    raise SpoolCorrupt(unsound)
                return self._connect()
            except SpoolCorrupt as problem:
                aside = self._move_aside()
                salvaged = _salvage(aside)
                db = self._connect()
                self._carry_over(db, salvaged)
                recovered = (
                    f"recovered {len(salvaged.batches)} batches ({salvaged.readings} readings) from it"
                    + (f"; {salvaged.unreadable}" if salvaged.unreadable else "")
                )
                log.error(
                    "spool %s is unusable (%s): moved aside to %s; %s; starting a fresh spool",
                    self.path, problem, aside, recovered,
                )  # fmt: skip
                self._new_events.append(
                    _Span().event(
                        GatewayEventKind.SPOOL_CORRUPT,
                        f"spool file unusable ({problem}); moved aside to {aside}; {recovered}",
                    )
                )
                return db

    def _carry_over(self, db: sqlite3.Connection, salvaged: _Salvaged) -> None:
        """Store the salvaged batches in the fresh spool, in order, as new batches."""
        if not salvaged.batches:
            return
        now = now_ms()
        with _transaction(db):
            (seq,) = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
            for boot_id, readings in salvaged.batches:
                db.execute(
                    "INSERT INTO batches (seq, created_ms, boot_id, readings, oldest_ts, newest_ts, unsynced, "
                    "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, now, boot_id, *_row(readings)),
                )
                seq += 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq,))

    def _connect(self) -> sqlite3.Connection:
        """Open and check the file. SQLite answers "database is locked" at once, without waiting, to an
        opener that meets another one switching a new file to WAL; such an opener tries again."""
        deadline = time.monotonic() + _OPEN_PATIENCE_S
        while True:
            try:
                return self._open_file()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _open_file(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            if (check := db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise SpoolCorrupt(f"quick_check: {check}")
            self._ensure_schema(db)
        except sqlite3.OperationalError:
            db.close()
            raise
        except (sqlite3.DatabaseError, SpoolCorrupt) as exc:
            db.close()
            raise SpoolCorrupt(str(exc)) from exc
        return db

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        """Create the tables in a new file, or check an existing one's; under a write lock, so a second
        process opening the same new file waits for the schema instead of seeing half of it."""
        with _transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and not tables:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                log.info("created spool %s", self.path)
            elif version != SCHEMA_VERSION or tables != TABLES:
                raise SpoolCorrupt(
                    f"not a kilowatch spool of schema {SCHEMA_VERSION} (version {version}, tables {sorted(tables)})"
                )

    def _move_aside(self) -> Path:
        aside = _aside_name(self.path)
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(f"{aside}{suffix}")
        return aside

    def _meta(self, key: str) -> Any:
        return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    # -- the event loop's side ----------------------------------------------------------------------------

    def append(self, readings: Sequence[Reading]) -> int | None:
        """Buffer one batch for the next commit; its seq, or None when the spool refuses it (disk full:
        the readings are counted as lost). Never blocks on the disk."""
        if not readings:
            raise ValueError("a batch needs at least one reading")
        with self._mem_lock:
            if self._lost is not None:
                self._lost.span.add(len(readings), min(r.ts for r in readings), max(r.ts for r in readings))
                self.lost_readings += len(readings)
                return None
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            if self._offset_ms is not None:
                readings, _ = _redate_unsynced(readings, self._offset_ms)
            self._buffer.append(_Buffered(seq, now_ms(), list(readings)))
            if len(self._buffer) == 1:  # a commit took the others
                self._buffered_readings = 0
            self._buffered_readings += len(readings)
            if self._buffered_readings >= COMMIT_READINGS:
                self._urgent.set()
        return seq

    def ack(self, seq: int) -> None:
        """The broker has batch `seq`: it is deleted at the next commit and never read again."""
        with self._mem_lock:
            self._acked.add(seq)

    def set_aside(self, seq: int, reason: str) -> None:
        """Move batch `seq`, which cannot be published (it fails the wire contract, e.g. after a
        contract change), out of the queue into `unpublishable`: kept, never retried, never deleted.
        Syncs the disk: from the event loop, call it through ``asyncio.to_thread``."""
        with self._db_lock:
            with _transaction(self.db):
                self.db.execute(
                    "INSERT OR REPLACE INTO unpublishable SELECT seq, boot_id, payload, ?, ? FROM batches"
                    " WHERE seq = ?",
                    (reason, now_ms(), seq),
                )
                self.db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            self._refresh_totals()

    def record_event(self, kind: GatewayEventKind, detail: str) -> None:
        """Buffer, for the next commit, an event that concerns no readings (e.g. a meter answering
        impossible values); published like the spool's own."""
        with self._mem_lock:
            self._new_events.append(_Span().event(kind, detail))

    def ack_event(self, event_id: int) -> None:
        with self._mem_lock:
            self._acked_events.add(event_id)

    @property
    def last_seq(self) -> int:
        """The highest committed seq; -1 before the first."""
        return self._stored_next_seq - 1

    @property
    def has_events(self) -> bool:
        """Whether committed events wait (acknowledged ones count until the next commit deletes them)."""
        return self._stored_events > 0

    def status(self) -> SpoolStatus:
        """What waits, as of the last commit plus what is buffered."""
        with self._mem_lock:
            buffered = _Span()
            for batch in self._buffer:
                buffered.add(len(batch.readings), min(r.ts for r in batch.readings), None)
            buffered.add(self._stored.readings, self._stored.oldest_ts, None)
            return SpoolStatus(
                pending_batches=self._stored_batches + len(self._buffer),
                pending_readings=buffered.readings,
                oldest_ts=buffered.oldest_ts,
                evicted_readings=self._evicted,
                accepting=self._lost is None,
            )

    async def wait_due(self) -> None:
        """Return when a commit is due: the interval is up or many readings wait."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._urgent.wait(), self.settings.commit_interval_s)
        self._urgent.clear()

    async def flush(self) -> bool:
        """Commit now (in a thread: it syncs the disk); True when it stored batches or events."""
        return await asyncio.to_thread(self._commit)

    async def read(
        self, after: int, *, upto: int | None = None, limit: int = 64
    ) -> tuple[list[SpooledBatch], int]:
        """Committed, unacknowledged batches with `after` < seq <= `upto`, oldest first, at most `limit`
        rows looked at; and the last seq looked at (`after` if none), to read on from."""
        return await asyncio.to_thread(self._read, after, upto, limit)

    async def events(self) -> list[SpooledEvent]:
        """Committed, unacknowledged events, oldest first."""
        return await asyncio.to_thread(self._events)

    def reanchor(self, boot_id: str, offset_ms: int) -> int:
        """Re-date the unsynced readings of boot `boot_id` not yet acknowledged (`ts` = `mono_ms` +
        `offset_ms`, clock `corrected`); how many changed. Syncs the disk once: from the event loop, call
        it through ``asyncio.to_thread``."""
        changed = 0
        with self._db_lock:
            with self._mem_lock:
                acked = set(self._acked)
                if boot_id == self.boot_id:
                    self._offset_ms = offset_ms
                    for batch in self._buffer:
                        batch.readings, count = _redate_unsynced(batch.readings, offset_ms)
                        changed += count
            rows = self.db.execute(
                "SELECT seq, payload FROM batches WHERE boot_id = ? AND unsynced > 0", (boot_id,)
            ).fetchall()
            with _transaction(self.db):
                for seq, payload in rows:
                    readings, count = _redate_unsynced(READINGS.validate_json(payload), offset_ms)
                    if count and seq not in acked:
                        self.db.execute(
                            "UPDATE batches SET readings = ?, oldest_ts = ?, newest_ts = ?, unsynced = ?, "
                            "payload = ? WHERE seq = ?",
                            (*_row(readings), seq),
                        )
                        changed += count
        log.info("re-dated %d readings of boot %s by offset %d ms", changed, boot_id, offset_ms)
        return changed

    def close(self) -> None:
        """Close the file; what is still buffered is not stored (call :meth:`flush` first)."""
        with self._db_lock:
            self.db.close()

    # -- the commit thread's side -------------------------------------------------------------------------

    def _read(self, after: int, upto: int | None, limit: int) -> tuple[list[SpooledBatch], int]:
        with self._db_lock:
            rows = self.db.execute(
                "SELECT seq, boot_id, payload FROM batches WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, self.last_seq if upto is None else upto, limit),
            ).fetchall()
        with self._mem_lock:
            acked = set(self._acked)
        batches = [SpooledBatch(seq, boot, payload) for seq, boot, payload in rows if seq not in acked]
        return batches, rows[-1][0] if rows else after

    def _events(self) -> list[SpooledEvent]:
        with self._db_lock:
            rows = self.db.execute(
                "SELECT kind, ts, readings, oldest_ts, newest_ts, detail, id FROM events ORDER BY id"
            ).fetchall()
        with self._mem_lock:
            acked = set(self._acked_events)
        return [SpooledEvent(GatewayEventKind(row[0]), *row[1:]) for row in rows if row[-1] not in acked]

    def _commit(self) -> bool:
        with self._db_lock:
            with self._mem_lock:
                buffer, self._buffer = self._buffer, []
                events, self._new_events = self._new_events, []
                acked, self._acked = self._acked, set()
                acked_events, self._acked_events = self._acked_events, set()
                lost, self._lost = self._lost, None
            recovered = [] if lost is None else self._recovery_events(lost)
            try:
                self._delete(acked, acked_events)
                with _transaction(self.db):
                    if lost is not None:
                        self._probe_headroom()
                    self._insert(buffer, events + recovered)
                    evicted = self._evict()
            except sqlite3.OperationalError as exc:
                self._refuse(exc, buffer, events, lost, acked, acked_events)
                return False
            self._stored_next_seq = buffer[-1].seq + 1 if buffer else self._stored_next_seq
            self._refresh_totals()
        if lost is not None:
            log.warning(
                "spool %s stores readings again; %d were lost meanwhile", self.path, lost.span.readings
            )
        if evicted is not None:
            log.warning("spool %s: %s", self.path, evicted.detail)
        return bool(buffer or events or recovered or evicted)

    def _recovery_events(self, lost: _Lost) -> list[SpooledEvent]:
        full = f"could not store readings from {lost.since_ms} ({lost.reason}); {lost.span.readings} lost"
        return [
            lost.span.event(GatewayEventKind.SPOOL_FULL, full, ts=lost.since_ms),
            lost.span.event(GatewayEventKind.SPOOL_ACCEPTING, "the spool stores readings again"),
        ]

    def _probe_headroom(self) -> None:
        """Fail like a full disk unless :data:`HEADROOM_BYTES` can be written."""
        self.db.execute(
            "INSERT INTO batches VALUES (-1, 0, NULL, 0, 0, 0, 0, zeroblob(?))", (HEADROOM_BYTES,)
        )
        self.db.execute("DELETE FROM batches WHERE seq = -1")

    def _delete(self, acked: set[int], acked_events: set[int]) -> None:
        if not (acked or acked_events):
            return
        with _transaction(self.db):
            self.db.executemany("DELETE FROM batches WHERE seq = ?", [(seq,) for seq in acked])
            self.db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in acked_events])

    def _insert(self, buffer: list[_Buffered], events: list[SpooledEvent]) -> None:
        self.db.executemany(
            "INSERT INTO events (kind, ts, readings, oldest_ts, newest_ts, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [(e.kind.value, e.ts, e.readings, e.oldest_ts, e.newest_ts, e.detail) for e in events],
        )
        self.db.executemany(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(b.seq, b.created_ms, self.boot_id, *_row(b.readings)) for b in buffer],
        )
        if buffer:
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (buffer[-1].seq + 1,))

    def _refuse(
        self,
        exc: sqlite3.OperationalError,
        buffer: list[_Buffered],
        events: list[SpooledEvent],
        lost: _Lost | None,
        acked: set[int],
        acked_events: set[int],
    ) -> None:
        """A commit failed (disk full, I/O error): the batches it carried and those buffered since are
        lost; events and acknowledgements are kept for the next try."""
        with self._mem_lock:
            dropped, self._buffer = buffer + self._buffer, []
            self._new_events[:0] = events
            self._acked |= acked
            self._acked_events |= acked_events
            self._next_seq = self._stored_next_seq
            self._lost = lost or _Lost(since_ms=now_ms(), reason=str(exc))
            for batch in dropped:
                self._lost.span.add(*_row(batch.readings)[:3])
                self.lost_readings += len(batch.readings)
        if lost is None:
            log.error(
                "spool %s cannot store readings (%s): new readings are lost until it can; retrying every "
                "commit",
                self.path,
                exc,
            )

    def _evict(self) -> SpooledEvent | None:
        """Delete the oldest batches while over the age or size bound; the event saying so, stored."""
        span, seqs, reasons = _Span(), [], []
        cutoff = now_ms() - round(self.settings.max_age_s * 1000)
        aged = self.db.execute("SELECT count(*) FROM batches WHERE created_ms < ?", (cutoff,)).fetchone()[0]
        if aged:
            seqs += self._evict_oldest(aged, span)
            reasons.append(f"older than {self.settings.max_age_s:g} s")
        while (used := self._used_bytes()) > self.settings.max_bytes:
            count = self.db.execute("SELECT count(*) FROM batches").fetchone()[0]
            if not count:
                break
            seqs += self._evict_oldest(max(1, count * (used - self.settings.max_bytes) // used), span)
            if f"over {self.settings.max_bytes} bytes" not in reasons:
                reasons.append(f"over {self.settings.max_bytes} bytes")
        if not span.readings:
            return None
        self.db.execute("UPDATE meta SET value = value + ? WHERE key = 'evicted_readings'", (span.readings,))
        event = span.event(
            GatewayEventKind.SPOOL_EVICTED,
            f"evicted {span.readings} unsent readings in {len(seqs)} batches (seq {min(seqs)}-{max(seqs)}): "
            + " and ".join(reasons),
        )
        self._insert([], [event])
        return event

    def _evict_oldest(self, count: int, span: _Span) -> list[int]:
        rows = self.db.execute(
            "SELECT seq, readings, oldest_ts, newest_ts FROM batches ORDER BY seq LIMIT ?", (count,)
        ).fetchall()
        for _, readings, oldest_ts, newest_ts in rows:
            span.add(readings, oldest_ts, newest_ts)
        self.db.execute("DELETE FROM batches WHERE seq <= ?", (rows[-1][0],))
        return [row[0] for row in rows]

    def _used_bytes(self) -> int:
        pages, free, size = (
            self.db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)

    def _refresh_totals(self) -> None:
        batches, readings, oldest = self.db.execute(
            "SELECT count(*), total(readings), min(oldest_ts) FROM batches"
        ).fetchone()
        events = self.db.execute("SELECT count(*) FROM events").fetchone()[0]
        evicted = self._meta("evicted_readings")
        with self._mem_lock:
            self._stored = _Span(int(readings), oldest)
            self._stored_batches, self._stored_events, self._evicted = batches, events, evicted


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (SQLite may already have rolled it back)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def inspect(path: Path) -> tuple[list[str], int]:
    """A read-only look at a spool file (`agent doctor`): SQLite's quick_check findings (``["ok"]`` when
    sound) and how many batches wait; a file SQLite cannot read is one finding."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            findings = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
            waiting = int(db.execute("SELECT count(*) FROM batches").fetchone()[0])
    except sqlite3.Error as exc:
        return [str(exc)], 0
    return findings, waiting
