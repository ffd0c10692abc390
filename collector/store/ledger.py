"""The ledger's writer: the collector's durable record (SQLite in WAL mode, or PostgreSQL), written in one place.

:class:`Ledger` is the single writer. Its methods are synchronous and serialised by a lock; async
callers run them with ``asyncio.to_thread``. Readers open :class:`~collector.store.reader.LedgerReader`.

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

Replicas: several collectors may write one PostgreSQL ledger (``shared``). Each transaction then first takes
the write locks of the gateways and meters its messages touch (:mod:`collector.store.leases`), in key
order, and reads each meter's state from the ledger instead of remembering it across transactions: a
gateway's batches may be committed by either replica, in either order, and each sees what the other
committed before it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

from collector import line_protocol
from collector.intervals import CounterSample, CounterStep
from collector.store import (
    clock,
    connection,
    delivery,
    gateways,
    intervals,
    leases,
    outbox,
    owners,
    readings,
    retention,
)
from collector.store.checks import IngestChecks
from collector.store.clock import QuarantineReason
from collector.store.connection import (
    Closing,
    DatabaseError,
    Db,
    Dialect,
    LedgerUnwritable,
    Location,
    location,
    unwritable_raised,
)
from collector.store.delivery import RejectedLimits, RejectedMessage, SeqJump
from collector.store.gateways import CollectorEventKind
from collector.store.intervals import BucketSums, CounterEvent, CounterEventKind
from collector.store.reader import LedgerReader
from collector.store.readings import COUNTERS, LatestParams, MeterSeen, ReadingParams
from collector.store.retention import RetentionPolicy
from kilowatch.clock import redate
from kilowatch.mqtt_contract import (
    INT64_MAX,
    ClockState,
    GatewayEvent,
    GatewayStatus,
    Quality,
    Reading,
    ReadingsBatch,
)
from kilowatch.quantities import ACTIVE_POWER
from kilowatch.timebase import bucket_start

Item = ReadingsBatch | GatewayStatus | GatewayEvent | RejectedMessage
"""What :meth:`Ledger.store` takes: a validated message, or a refused one."""

CLOCK_STEP_TOLERANCE_MS = 10_000
"""A synchronised clock differing from its boot's offset (UTC minus boottime) by more than this has been
stepped (a bad time server, a wrong manual setting). Slewing and the gap between stamping a reading and
its monotonic time stay far below it."""


class ReadingRejection(StrEnum):
    """Why a reading of a valid batch was refused; the ``reason`` label of the refused readings' metric."""

    TOO_MANY_METERS = "too_many_meters"
    """A meter new to its gateway, which already has as many as it may (``max_meters_per_gateway``)."""
    FOREIGN_METER = "foreign_meter"
    """A meter bound to another gateway (see :mod:`collector.store.owners`); a ``foreign_meter`` gateway
    event names it."""
    EXPIRED = "expired"
    """Older than the ledger keeps its meter's readings in rows (see
    :func:`collector.store.retention.too_old`): it could no longer be told from one already stored, nor
    booked in intervals between its neighbours."""


class BadValue(StrEnum):
    """Why a value of a stored reading is bad; the ``reason`` label of the bad values' metric."""

    OUT_OF_RANGE = "out_of_range"
    """Outside its quantity's physical range: the agent (or the contract, when it parsed the batch) marked
    it bad."""
    COUNTER_STEP = "counter_step"
    """A counter rising faster than the meter's maximum power allows: not booked as energy."""


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
    rejected_readings: dict[ReadingRejection, int] = field(default_factory=dict)
    """Readings refused (counted, not stored), by reason."""
    bad_values: dict[BadValue, int] = field(default_factory=dict)
    """Values of newly stored readings that are bad, by reason."""
    seq_jump: SeqJump | None = None
    """The batch's seq began a new numbering of its spool (recorded as a ``spool_epoch`` event)."""


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


class _Pending:
    """What a transaction has still to write: appended readings (inserted with one executemany before
    anything reads ``readings``); what each (meter, bucket) gains, and each meter's newest new reading and
    first/last seen, upserted once before commit instead of once per reading or message."""

    def __init__(self) -> None:
        self.readings: list[ReadingParams] = []
        self.buckets: dict[tuple[str, int], BucketSums] = {}
        """(meter, bucket start) -> what the transaction adds to it."""
        self.latest: dict[str, Reading] = {}
        """meter -> its newest new reading."""
        self.meters: dict[str, MeterSeen] = {}
        """meter -> (site, gateway, profile) of its newest reading, first and last ts seen."""


class Ledger(Closing):
    """The single writer. Creates the file and its tables when missing, upgrades an older one.

    Args:
        where: The SQLite file or the PostgreSQL database.
        outbox: Also record stored readings in the TSDB outbox (a TSDB is configured).
        max_meters_per_gateway: Readings of a meter new to a gateway that has this many are refused and
            counted (None: no limit); what one gateway's credentials can add to the ledger stays bounded.
        rejected: How much of the refused messages is kept.
        checks: Time window, meter owners and counter rates to hold readings to; None: none (a ledger fed
            by a trusted replay, or a test of the bookkeeping alone).
        retention: What :meth:`prune` forgets; readings older than it keeps are refused. None: nothing is
            pruned.
        shared: Other collectors (replicas) write the same PostgreSQL ledger (see the module docstring).
    """

    def __init__(
        self,
        where: Path | str | Location,
        *,
        outbox: bool = False,
        max_meters_per_gateway: int | None = None,
        rejected: RejectedLimits = RejectedLimits(),  # noqa: B008 - frozen
        checks: IngestChecks | None = None,
        retention: RetentionPolicy | None = None,
        shared: bool = False,
    ) -> None:
        self.where = location(where)
        self._shared = shared
        self._retention = retention
        self._checks = checks
        self._owners: dict[str, tuple[str, str]] = {}
        """Meter owners looked up in this transaction (a move by another process shows at the next)."""
        self._refused_counters: dict[tuple[str, str], CounterSample] = {}
        """(meter, counter) -> its last value refused as an implausible step: a meter that keeps counting
        plausibly from there was replaced or re-based, and is taken up from there (as after a reset)."""
        self._outbox = outbox
        """Whether stored readings also go to the TSDB outbox (only when a TSDB is configured)."""
        self._max_meters = max_meters_per_gateway
        self._gateway_meters: dict[tuple[str, str], set[str]] = {}
        """Each gateway's meters as far as the limit goes (loaded lazily; forgotten on rollback)."""
        self._rejected_limits = rejected
        self._rejected_bytes: int | None = None
        """What the kept refused messages weigh (loaded lazily; forgotten on rollback)."""
        self._rejected_pruned_at = 0
        self._lock = threading.Lock()
        self._meters: dict[str, _MeterState] = {}
        self._meter_keys = readings.MeterKeys()
        self._boot_offsets: dict[clock.BootKey, int] = {}
        """Each boot's offset from ``boot_clocks``, kept so a batch costs no look-up (forgotten on rollback)."""
        self._pending = _Pending()
        self._inserted = 0
        """Readings the running transaction has inserted."""
        self.readings_stored = 0
        """Readings inserted by the transactions committed since the ledger was opened: what was stored,
        not what arrived (a redelivered reading the ledger had is not counted)."""
        with self._lock:
            self._db = connection.open_writer(self.where)

    def close(self) -> None:
        """Close once any running transaction has finished."""
        with self._lock:
            self._db.close()

    def reader(self) -> LedgerReader:
        return LedgerReader(self.where)

    @contextmanager
    def _transaction(self, locks: Sequence[int] = ()) -> Iterator[Db]:
        """BEGIN (IMMEDIATE) ... COMMIT, writing what is pending first; on any failure ROLLBACK and forget
        the in-memory meter states, which may describe rows that are no longer there. A shared ledger's
        transaction takes the write `locks` first and starts with no meter state remembered.

        Raises :class:`LedgerUnwritable` (chained from the backend's error) when the ledger cannot be
        written now (disk full, I/O error, locked; a PostgreSQL server down or refusing writes), whatever the
        transaction held; any other error is the data's.
        """
        with self._lock:
            with unwritable_raised():  # another writer holds the file past the busy timeout, say
                self._db.begin()
            self._pending = _Pending()
            self._inserted = 0
            self._owners.clear()
            try:
                if self._shared:
                    self._forget()
                    if locks and self._db.dialect is Dialect.POSTGRESQL:
                        self._db.execute(leases.WRITE_LOCKS, (list(locks),))
                yield self._db
                self._flush(self._db)
                self._db.execute("COMMIT")
                self.readings_stored += self._inserted
            except BaseException as exc:
                self._forget()
                self._meter_keys.forget()
                self._rejected_bytes = None
                self._pending = _Pending()
                try:
                    if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                        self._db.execute("ROLLBACK")
                except DatabaseError as failed:
                    raise LedgerUnwritable(f"{exc}; and the rollback failed: {failed}") from failed
                with unwritable_raised():
                    raise

    def _forget(self) -> None:
        """Forget what the writer remembers of meters and gateways (their keys excepted: they never change)."""
        self._meters.clear()
        self._boot_offsets.clear()
        self._gateway_meters.clear()

    def store(self, items: Sequence[Item], *, received_at: int) -> list[IngestResult]:
        """Store a group of messages in one transaction (all or none); one result per item, in order."""
        locks = _write_locks(items) if self._shared else ()
        with self._transaction(locks) as db:
            results = [self._store_item(db, item, received_at) for item in items]
            self._keep_rejected_within_limits(db, received_at)
            return results

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

    def move_meter(self, meter: str, site: str, gateway: str, *, at: int) -> owners.OwnerRow | None:
        """Bind `meter` to (site, gateway) from now on (its readings from any other gateway are refused),
        with a ``meter_moved`` event for that gateway; returns the binding it replaced, if any."""
        locks = leases.write_lock_keys([(site, gateway)], [meter]) if self._shared else ()
        with self._transaction(locks) as db:
            previous = owners.bind(db, meter, site, gateway, at, owners.Binding.MOVED)
            was = "no gateway" if previous is None else f"{previous.site}/{previous.gateway}"
            gateways.record_collector_event(
                db,
                site,
                gateway,
                CollectorEventKind.METER_MOVED,
                f"meter {meter} moved here from {was}",
                at=at,
            )
            return previous

    def outbox_delete(self, last_id: int) -> None:
        """Forget TSDB outbox rows up to `last_id`, once the TSDB has taken them."""
        with self._transaction() as db:
            outbox.points_delivered(db, last_id)

    def prune(self, *, now_ms: int, limit: int) -> retention.Pruned:
        """One short transaction of retention (see :mod:`collector.store.retention`): at most about `limit`
        rows deleted; fewer: nothing is left to prune."""
        if self._retention is None:
            return retention.Pruned()
        with self._transaction() as db:
            pruned = retention.prune(db, self._retention, now_ms=now_ms, limit=limit)
        with self._lock:
            for meter in pruned.meters:  # its newest counter samples may have gone
                self._meters.pop(meter, None)
        return pruned

    def drop_partitions(self, *, now_ms: int) -> list[str]:
        """PostgreSQL: drop in one short transaction the readings' month partitions retention has emptied
        (:func:`collector.store.retention.drop_partitions`); returns their names. SQLite has no partitions."""
        if self._retention is None or self._db.dialect is not Dialect.POSTGRESQL:
            return []
        with self._transaction() as db:
            return retention.drop_partitions(db, self._retention, now_ms=now_ms)

    def reclaim(self, pages: int) -> int:
        """Give up to `pages` free pages back to the file system; returns how many bytes."""
        with self._lock:
            return retention.reclaim(self._db, pages)

    def _store_item(self, db: Db, item: Item, received_at: int) -> IngestResult:
        if isinstance(item, ReadingsBatch):
            return self._ingest(db, item, received_at)
        if isinstance(item, GatewayStatus):
            return self._record_status(db, item, received_at)
        if isinstance(item, GatewayEvent):
            return IngestResult(new_event=gateways.record_event(db, item, received_at))
        delivery.reject(db, item, received_at)
        if self._rejected_bytes is not None:
            self._rejected_bytes += delivery.row_bytes(item)
        return IngestResult()

    def _keep_rejected_within_limits(self, db: Db, now_ms: int) -> None:
        """Drop the oldest refused messages beyond the byte budget (down to 90% of it, so that this runs
        once per many rejections, not at each) and, once a minute, those past their retention."""
        limits = self._rejected_limits
        if self._shared and now_ms - self._rejected_pruned_at >= 60_000:
            # Counted again once a minute: other replicas keep refused messages too.
            self._rejected_bytes = None
        if self._rejected_bytes is None:
            self._rejected_bytes = delivery.rejected_bytes(db)
        over = self._rejected_bytes - limits.max_bytes
        if over <= 0 and now_ms - self._rejected_pruned_at < 60_000:
            return
        at_least = over + limits.max_bytes // 10 if over > 0 else 0
        self._rejected_bytes -= delivery.drop_rejected(
            db, at_least_bytes=at_least, before_ms=now_ms - limits.retention_ms
        )
        self._rejected_pruned_at = now_ms

    def _ingest(self, db: Db, batch: ReadingsBatch, received_at: int) -> IngestResult:
        """A batch: skipped whole when seen; else its trusted readings stored, unsynchronised ones
        re-dated (anchor known) or quarantined.

        Without a spool_id (older agents) seq restarts with the agent, so a seen seq proves nothing: the
        readings go through (meter, ts) dedup, and no gaps are tracked.
        """
        key = (batch.site, batch.gateway, batch.spool_id or "")
        seen = delivery.seen(db, key, batch.seq)
        if seen and batch.spool_id is not None:
            return IngestResult(duplicates=len(batch.readings), duplicate_batch=True)
        tracked = 0 if seen or batch.spool_id is None else delivery.track_seq(db, key, batch.seq, received_at)
        missing, jump = (0, tracked) if isinstance(tracked, SeqJump) else (tracked, None)
        if jump is not None:
            gateways.record_collector_event(
                db, batch.site, batch.gateway, CollectorEventKind.SPOOL_EPOCH,
                f"spool {batch.spool_id}: seq {batch.seq} "
                + ("is its first" if jump.previous is None else f"follows {jump.previous}")
                + f", more than {delivery.MAX_SEQ_JUMP} on: a new numbering, not missing batches",
                at=received_at, readings=len(batch.readings),
            )  # fmt: skip
        delivery.record_batch(db, key, batch.seq, len(batch.readings), received_at)
        boot = None if batch.boot_id is None else (batch.site, batch.gateway, batch.boot_id)
        where = (batch.site, batch.gateway, batch.boot_id)
        offset = None if boot is None else clock.anchor_offset(db, boot)
        reference = offset
        trusted: list[Reading] = []
        quarantined: dict[QuarantineReason, int] = {}
        corrected = 0
        stepped: list[Reading] = []
        step_ms = 0
        for reading in batch.readings:
            if reading.clock is not ClockState.UNSYNCED:
                # A time outside the window never becomes the boot's reference: it would make every
                # later reading of the boot look stepped and re-date it there.
                if (
                    boot is not None
                    and reading.mono_ms is not None
                    and reference is None
                    and self._plausible(reading.ts, received_at)
                ):
                    reference = self._boot_offset(db, boot, reading.ts - reading.mono_ms)
                if reference is not None and reading.mono_ms is not None:
                    step = reading.ts - reading.mono_ms - reference
                    if abs(step) > CLOCK_STEP_TOLERANCE_MS:
                        if (redated := _redated(reading, reference)) is None:
                            _hold(
                                db,
                                where,
                                reading,
                                QuarantineReason.IMPLAUSIBLE_TIME,
                                received_at,
                                quarantined,
                            )
                            continue
                        step_ms = step
                        reading = redated
                        stepped.append(reading)
                trusted.append(reading)
            elif offset is not None and reading.mono_ms is not None:
                if (redated := _redated(reading, offset)) is None:
                    _hold(db, where, reading, QuarantineReason.IMPLAUSIBLE_TIME, received_at, quarantined)
                    continue
                trusted.append(redated)
                corrected += 1
            else:
                reason = (
                    QuarantineReason.NO_MONOTONIC_TIME
                    if batch.boot_id is None or reading.mono_ms is None
                    else QuarantineReason.AWAITING_ANCHOR
                )
                _hold(db, where, reading, reason, received_at, quarantined)
        trusted = self._in_window(
            db, batch.site, batch.gateway, batch.boot_id, trusted, received_at, quarantined
        )
        stored = self._store_readings(db, batch.site, batch.gateway, trusted, received_at)
        refused = sum(stored.rejected_readings.values())
        duplicates = len(batch.readings) - stored.accepted - refused - sum(quarantined.values())
        new_step = False
        if stepped:
            assert boot is not None
            start, end = min(r.ts for r in stepped), max(r.ts for r in stepped)
            new_step = clock.record_step(db, boot, start, end, step_ms)
        return IngestResult(
            clock_stepped=len(stepped),
            new_clock_step=new_step,
            accepted=stored.accepted,
            duplicates=duplicates,
            counter_resets=stored.counter_resets,
            duplicate_batch=seen and stored.accepted == 0,
            missing_batches=missing,
            quarantined=quarantined,
            corrected=corrected,
            outbox_rows=stored.outbox_rows,
            outbox_points=stored.outbox_points,
            rejected_readings=stored.rejected_readings,
            bad_values=stored.bad_values,
            seq_jump=jump,
        )

    def _plausible(self, ts: int, received_at: int) -> bool:
        return self._checks is None or self._checks.window.problem(ts, received_at) is None

    def _in_window(
        self,
        db: Db,
        site: str,
        gateway: str,
        boot_id: str | None,
        candidates: list[Reading],
        received_at: int,
        quarantined: dict[QuarantineReason, int],
    ) -> list[Reading]:
        """The readings whose (final) time is within the checks' window; the others quarantined."""
        if self._checks is None:
            return candidates
        window, kept = self._checks.window, []
        for reading in candidates:
            if window.problem(reading.ts, received_at) is None:
                kept.append(reading)
            else:
                where = (site, gateway, boot_id)
                _hold(db, where, reading, QuarantineReason.IMPLAUSIBLE_TIME, received_at, quarantined)
        return kept

    def _store_readings(
        self, db: Db, site: str, gateway: str, new_readings: list[Reading], received_at: int
    ) -> IngestResult:
        """Trusted readings into readings, meters, latest, intervals and the outbox.

        One at a time, in time order (stable: the first of two equal readings is kept), so each finds its
        stored neighbours, earlier ones of this transaction included. Most of them are newer than anything
        stored for their meter: they only append (no look-up, see :class:`_MeterState`), and their rows
        wait in the pending list until something has to read ``readings``. Any other reading takes the
        general path: INSERT OR IGNORE, then the neighbour look-ups of :meth:`_add_to_intervals`.

        With checks, a reading of a meter bound to another gateway is refused (and a ``foreign_meter``
        event names it), and a counter rising faster than its meter can is kept as a bad value.
        """
        new: list[Reading] = []
        resets = 0
        refused = 0
        expired: list[Reading] = []
        foreign: dict[str, tuple[str, str]] = {}
        foreign_ts: list[int] = []
        bad: dict[BadValue, int] = {}
        pending = self._pending
        for reading in sorted(new_readings, key=_ts):
            if not self._meter_admitted(db, site, gateway, reading.meter):  # before a new meter is bound
                refused += 1
                continue
            owner = self._owner(db, site, gateway, reading.meter, received_at)
            if owner != (site, gateway):
                foreign[reading.meter] = owner
                foreign_ts.append(reading.ts)
                continue
            state = self._meter_state(db, reading.meter)
            if (
                self._retention is not None
                and state.newest_ts is not None
                and retention.too_old(reading.ts, state.newest_ts, self._retention)
            ):  # too late for the ledger's books; the TSDB, which keeps every reading, still gets it
                expired.append(reading)
                continue
            reading, too_fast, rebased, appended = self._judge_counters(db, reading, state)
            row = readings.row(self._meter_keys.key(db, reading.meter), reading)
            if state.newest_ts is None or reading.ts > state.newest_ts:
                pending.readings.append(row)
                state.newest_ts = reading.ts
            else:
                self._flush_readings(db)
                if not readings.insert(db, row):
                    continue
                self._inserted += 1
            new.append(reading)
            if reading.value_reasons:
                _count_bad(bad, reading, too_fast)
            resets += self._add_to_intervals(db, reading, state, rebased, appended)
        self._pend_meters(site, gateway, new)
        if foreign:
            _record_foreign(db, site, gateway, foreign, foreign_ts, received_at)
        # The values are turned into text only where they go as text: the outbox's line protocol, and the
        # JSON of each meter's latest reading (at flush); float.__repr__ of every value cost 13 % of ingest.
        points = line_protocol.lines(site, gateway, [*new, *expired]) if self._outbox else []
        if points:
            outbox.add_points(db, points)
        rejected = {
            ReadingRejection.TOO_MANY_METERS: refused,
            ReadingRejection.FOREIGN_METER: len(foreign_ts),
            ReadingRejection.EXPIRED: len(expired),
        }
        return IngestResult(
            accepted=len(new),
            duplicates=len(new_readings) - len(new) - refused - len(foreign_ts) - len(expired),
            counter_resets=resets,
            outbox_rows=int(bool(points)),
            outbox_points=len(points),
            rejected_readings={reason: n for reason, n in rejected.items() if n},
            bad_values=bad,
        )

    def _owner(self, db: Db, site: str, gateway: str, meter: str, at: int) -> tuple[str, str]:
        """The (site, gateway) the meter belongs to: provisioned, else bound; a meter of nobody yet is
        bound to this gateway (unless the sites file puts it in another site)."""
        if self._checks is None:
            return site, gateway
        known = self._owners.get(meter)
        if known is not None:
            return known
        want_site, want_gateway = self._checks.provisioned.get(meter, (None, None))
        if want_site is not None and want_gateway is not None:
            known = (want_site, want_gateway)
        elif (row := owners.owner(db, meter)) is not None and want_site in (None, row.site):
            known = (row.site, row.gateway)
        elif want_site not in (None, site):
            known = (str(want_site), "(not seen yet)")
        else:
            how = owners.Binding.FIRST_SEEN if want_site is None else owners.Binding.PROVISIONED
            owners.bind(db, meter, site, gateway, at, how)
            known = (site, gateway)
        self._owners[meter] = known
        return known

    def _judge_counters(
        self, db: Db, reading: Reading, state: _MeterState
    ) -> tuple[Reading, set[str], set[str], dict[str, CounterStep]]:
        """The reading with every counter that rose faster than its meter can (from the stored reading
        before it, or to the one after) made a bad value; the counters so refused, those taken up
        afresh (a meter that goes on counting plausibly from its refused value was replaced or re-based:
        that step is booked as a reset, not as energy), and the plausible steps from each counter's newest
        stored sample to a reading newer than it (what :meth:`_add_to_intervals` books, not made twice)."""
        if self._checks is None:
            return reading, set(), set(), {}
        max_kw = self._checks.meter_max_kw(reading.meter)
        refused: dict[str, str] = {}
        rebased: set[str] = set()
        appended: dict[str, CounterStep] = {}
        for quantity in COUNTERS:
            value = reading.values.get(quantity)
            if value is None:
                continue
            new = CounterSample(reading.ts, value)
            newest = self._newest_sample(db, reading.meter, state, quantity)
            if newer := newest is None or reading.ts > newest.ts:
                prev, nxt = newest, None
            else:
                self._flush_readings(db)
                prev, nxt = intervals.neighbours(db, reading.meter, quantity, reading.ts)
            step = None if prev is None else CounterStep(prev, new)
            why = (None if step is None else step.implausible(max_kw)) or (
                None if nxt is None else CounterStep(new, nxt).implausible(max_kw)
            )
            key = (reading.meter, quantity)
            last = self._refused_counters.pop(key, None) if self._refused_counters else None
            if why is None:
                if newer and step is not None:
                    appended[quantity] = step
                continue
            if nxt is None and last is not None and last.ts < new.ts:
                from_last = CounterStep(last, new)
                if not from_last.reset and from_last.implausible(max_kw) is None:
                    rebased.add(quantity)
                    continue
            self._refused_counters[key] = new
            refused[quantity] = f"{why} (kept out of intervals)"
        if not refused:
            return reading, set(), rebased, appended
        quality = Quality.BAD if reading.quality in (Quality.GOOD, Quality.STALE) else reading.quality
        judged = reading.model_copy(
            update={
                "values": {k: v for k, v in reading.values.items() if k not in refused},
                "value_quality": {**reading.value_quality, **dict.fromkeys(refused, Quality.BAD)},
                "value_reasons": {**reading.value_reasons, **refused},
                "quality": quality,
            }
        )
        return judged, set(refused), rebased, appended

    def _meter_admitted(self, db: Db, site: str, gateway: str, meter: str) -> bool:
        """Whether a reading of `meter` may be stored for the gateway: a meter it has reported, or a new
        one while it has reported fewer than ``max_meters_per_gateway`` (asked before a new meter is bound
        to it, so that ids beyond the limit cost nothing; a foreign meter it reports counts against it)."""
        if self._max_meters is None:
            return True
        key = (site, gateway)
        known = self._gateway_meters.get(key)
        if known is None:
            known = self._gateway_meters[key] = readings.gateway_meters(db, site, gateway)
        if meter in known:
            return True
        if len(known) >= self._max_meters:
            return False
        known.add(meter)
        return True

    def _meter_state(self, db: Db, meter: str) -> _MeterState:
        state = self._meters.get(meter)
        if state is None:
            state = self._meters[meter] = _MeterState(readings.newest_ts(db, meter))
        return state

    def _newest_sample(self, db: Db, meter: str, state: _MeterState, quantity: str) -> CounterSample | None:
        if quantity not in state.counters:
            self._flush_readings(db)
            state.counters[quantity] = intervals.newest_sample(db, meter, quantity)
        return state.counters[quantity]

    def _pend_meters(self, site: str, gateway: str, new: list[Reading]) -> None:
        """Note each meter's newest new reading (for `latest`) and where it is (for `meters`).

        Where a meter is (site, gateway, profile) follows its newest reading (of a message: the first with
        the highest ts; of a transaction: the last message with the highest ts, as one upsert per message
        would leave it); first/last seen widen.
        """
        # In time order (see _store_readings): a meter's last reading is its newest, its first its oldest.
        newest_of = {reading.meter: reading for reading in new}
        first_of = {reading.meter: reading.ts for reading in reversed(new)}
        latest, meters = self._pending.latest, self._pending.meters
        for meter, newest in newest_of.items():
            first = first_of[meter]
            kept = latest.get(meter)
            if kept is None or newest.ts > kept.ts:
                latest[meter] = newest
            where = meters.get(meter)
            if where is None:
                meters[meter] = MeterSeen(site, gateway, newest.profile, first, newest.ts)
            elif newest.ts >= where.last_seen:
                meters[meter] = MeterSeen(
                    site, gateway, newest.profile, min(first, where.first_seen), newest.ts
                )
            else:
                meters[meter] = where._replace(first_seen=min(first, where.first_seen))

    def _flush_readings(self, db: Db) -> None:
        if self._pending.readings:
            readings.append(db, self._pending.readings)
            self._inserted += len(self._pending.readings)  # a plain INSERT each: all or an error
            self._pending.readings = []

    def _flush(self, db: Db) -> None:
        """Write what the transaction has pending (before it commits)."""
        pending = self._pending
        self._flush_readings(db)
        if pending.buckets:
            intervals.add_to_buckets(db, pending.buckets)
        if pending.latest:
            readings.upsert_latest(
                db,
                [
                    LatestParams(
                        meter,
                        reading.ts,
                        readings.values_json(line_protocol.formatted_values(reading.values)),
                        reading.quality.value,
                        json.dumps({k: v.value for k, v in reading.value_quality.items()}),
                        reading.clock.value,
                        json.dumps(reading.value_reasons),
                    )
                    for meter, reading in pending.latest.items()
                ],
            )
        if pending.meters:
            readings.upsert_meters(db, list(pending.meters.items()))
        self._pending = _Pending()

    def _bucket(self, meter: str, ts: int) -> BucketSums:
        key = (meter, bucket_start(ts))
        sums = self._pending.buckets.get(key)
        if sums is None:
            sums = self._pending.buckets[key] = BucketSums()
        return sums

    def _add_to_intervals(
        self,
        db: Db,
        reading: Reading,
        state: _MeterState,
        rebased: set[str],
        appended: dict[str, CounterStep],
    ) -> int:
        """Fold a newly stored trusted reading into its meter's intervals and counter events.

        The reading is a sample of its bucket. For each counter it carries, the step between its stored
        neighbours (if it lands between two) is taken out and the steps from the previous reading to it and
        from it to the next are put in. A reading newer than the counter's newest stored sample has that
        sample as its previous neighbour and no next one: no look-up (and its step, when judged already,
        comes in `appended`). Returns the change in the number of resets.
        """
        meter, ts = reading.meter, reading.ts
        sums = self._bucket(meter, ts)
        sums.samples += 1
        power = reading.values.get(ACTIVE_POWER)
        if power is not None:
            kw, max_kw = power / 1000, sums.max_kw
            sums.max_kw = kw if max_kw is None else max(max_kw, kw)
        resets = 0
        for quantity in COUNTERS:
            value = reading.values.get(quantity)
            if value is None:
                continue
            if (step := appended.get(quantity)) is not None:
                state.counters[quantity] = step.end
                resets += self._apply_step(db, meter, quantity, step, 1)
                continue
            new = CounterSample(ts, value)
            newest = self._newest_sample(db, meter, state, quantity)
            if newest is None or ts > newest.ts:
                state.counters[quantity] = new
                if newest is not None and quantity in rebased:
                    event = CounterEvent(
                        meter, quantity, CounterEventKind.RESET, newest.ts, newest.value, ts, value
                    )
                    intervals.insert_event(db, event)
                    resets += 1
                elif newest is not None:
                    resets += self._apply_step(db, meter, quantity, CounterStep(newest, new), 1)
                continue
            self._flush_readings(db)
            prev, nxt = intervals.neighbours(db, meter, quantity, ts)
            if prev is not None and nxt is not None:
                resets += self._apply_step(db, meter, quantity, CounterStep(prev, nxt), -1)
            if prev is not None:
                resets += self._apply_step(db, meter, quantity, CounterStep(prev, new), 1)
            if nxt is not None:
                resets += self._apply_step(db, meter, quantity, CounterStep(new, nxt), 1)
        return resets

    def _apply_step(
        self, db: Db, meter_id: str, quantity: str, step: CounterStep, sign: Literal[1, -1]
    ) -> int:
        """Add (sign 1) or take out (sign -1) a step's energy and its counter event; returns its resets.

        The energy is summed per bucket in memory and upserted at commit; the event is written at once.
        """
        for start, share in step.shares():
            sums = self._bucket(meter_id, start)
            energy = getattr(sums, quantity)
            setattr(sums, quantity, sign * share if energy is None else energy + sign * share)
        if (event := CounterEvent.of(meter_id, quantity, step)) is None:
            return 0
        if sign > 0:
            intervals.insert_event(db, event)
        else:
            intervals.delete_event(db, event)
        return sign * (event.kind is CounterEventKind.RESET)

    def _boot_offset(self, db: Db, boot: clock.BootKey, seen_ms: int) -> int:
        """The boot's clock offset when no anchor gave it: the first synchronised reading's, kept."""
        if boot not in self._boot_offsets:
            self._boot_offsets[boot] = clock.boot_offset(db, boot, seen_ms)
        return self._boot_offsets[boot]

    def _record_status(self, db: Db, status: GatewayStatus, received_at: int) -> IngestResult:
        """Keep the status; its clock anchor re-dates the boot's quarantined readings."""
        gateways.record_status(db, status, received_at)
        anchor = status.clock_anchor
        if anchor is None:
            return IngestResult()
        clock.record_anchor(db, status.site, status.gateway, anchor)
        where = (status.site, status.gateway, anchor.boot_id)
        released = clock.release(db, where)
        quarantined = {QuarantineReason.AWAITING_ANCHOR: -len(released)} if released else {}
        candidates = []
        for reading in released:
            if (redated_one := _redated(reading, anchor.offset_ms)) is None:
                _hold(db, where, reading, QuarantineReason.IMPLAUSIBLE_TIME, received_at, quarantined)
            else:
                candidates.append(redated_one)
        redated = self._in_window(
            db, status.site, status.gateway, anchor.boot_id, candidates, received_at, quarantined
        )
        stored = self._store_readings(db, status.site, status.gateway, redated, received_at)
        return IngestResult(
            accepted=stored.accepted,
            duplicates=stored.duplicates,
            counter_resets=stored.counter_resets,
            quarantined=quarantined,
            corrected=len(redated),
            outbox_rows=stored.outbox_rows,
            outbox_points=stored.outbox_points,
            rejected_readings=stored.rejected_readings,
        )


def _write_locks(items: Sequence[Item]) -> list[int]:
    """The write locks of a group: each gateway sending and each meter read in it."""
    senders = {
        (i.site, i.gateway) for i in items if isinstance(i, ReadingsBatch | GatewayStatus | GatewayEvent)
    }
    meters = {r.meter for i in items if isinstance(i, ReadingsBatch) for r in i.readings}
    return leases.write_lock_keys(senders, meters)


def _ts(reading: Reading) -> int:
    return reading.ts


def _redated(reading: Reading, offset_ms: int) -> Reading | None:
    """The reading re-dated by its monotonic time; None when that is no time the ledger can hold (outside
    0..INT64_MAX: a monotonic time or an offset at the contract's extremes, which no real clock gives)."""
    assert reading.mono_ms is not None
    return redate(reading, offset_ms) if 0 <= reading.mono_ms + offset_ms <= INT64_MAX else None


def _hold(
    db: Db,
    boot: tuple[str, str, str | None],
    reading: Reading,
    reason: QuarantineReason,
    received_at: int,
    quarantined: dict[QuarantineReason, int],
) -> None:
    """Quarantine a reading of a (site, gateway, boot_id), counting it in `quarantined` unless it already
    was (a resend)."""
    if clock.quarantine(db, *boot, reading, reason, received_at):
        quarantined[reason] = quarantined.get(reason, 0) + 1


def _count_bad(bad: dict[BadValue, int], reading: Reading, too_fast: set[str]) -> None:
    """Add a stored reading's bad values to `bad`, by reason."""
    for name in reading.value_reasons:
        reason = BadValue.COUNTER_STEP if name in too_fast else BadValue.OUT_OF_RANGE
        bad[reason] = bad.get(reason, 0) + 1


def _record_foreign(
    db: Db,
    site: str,
    gateway: str,
    foreign: dict[str, tuple[str, str]],
    times: list[int],
    at: int,
) -> None:
    """One ``foreign_meter`` event for a message's readings of meters bound elsewhere."""
    named = ", ".join(f"{meter} (bound to {s}/{g})" for meter, (s, g) in sorted(foreign.items())[:5])
    more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
    gateways.record_collector_event(
        db, site, gateway, CollectorEventKind.FOREIGN_METER,
        f"refused {len(times)} readings of meters bound to another gateway: {named}{more}; "
        "move a meter with `kilowatch collector move-meter`",
        at=at, readings=len(times), oldest_ts=min(times), newest_ts=max(times),
    )  # fmt: skip
