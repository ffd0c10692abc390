"""The ledger's writer: the collector's durable record in SQLite (WAL), written in one place.

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
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from collector import line_protocol
from collector.intervals import CounterSample, CounterStep
from collector.store import clock, connection, delivery, gateways, intervals, outbox, readings
from collector.store.clock import QuarantineReason
from collector.store.connection import Closing
from collector.store.delivery import RejectedMessage
from collector.store.intervals import BucketSums, CounterEvent, CounterEventKind
from collector.store.reader import LedgerReader
from collector.store.readings import COUNTERS, LatestParams, MeterSeen, ReadingParams
from kilowatch.clock import redate
from kilowatch.mqtt_contract import ClockState, GatewayEvent, GatewayStatus, Reading, ReadingsBatch
from kilowatch.quantities import ACTIVE_POWER, ENERGY_EXPORT, ENERGY_IMPORT
from kilowatch.timebase import bucket_start

Item = ReadingsBatch | GatewayStatus | GatewayEvent | RejectedMessage
"""What :meth:`Ledger.store` takes: a validated message, or a refused one."""

CLOCK_STEP_TOLERANCE_MS = 10_000
"""A synchronised clock differing from its boot's offset (UTC minus boottime) by more than this has been
stepped (a bad time server, a wrong manual setting). Slewing and the gap between stamping a reading and
its monotonic time stay far below it."""


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
"""A newly stored reading, its values formatted for the line protocol, and as JSON (a plain tuple: one is
made per reading on the hot path)."""


class _Pending:
    """What a transaction has still to write: appended readings (inserted with one executemany before
    anything reads ``readings``); what each (meter, bucket) gains, and each meter's newest new reading and
    first/last seen, upserted once before commit instead of once per reading or message."""

    def __init__(self) -> None:
        self.readings: list[ReadingParams] = []
        self.buckets: dict[tuple[str, int], BucketSums] = {}
        """(meter, bucket start) -> what the transaction adds to it."""
        self.latest: dict[str, tuple[Reading, str]] = {}
        """meter -> its newest new reading and its values as JSON."""
        self.meters: dict[str, MeterSeen] = {}
        """meter -> (site, gateway, profile) of its newest reading, first and last ts seen."""


class Ledger(Closing):
    """The single writer. Creates the file and its tables when missing, upgrades an older one.

    Args:
        path: The SQLite file.
        outbox: Also record stored readings in the TSDB outbox (a TSDB is configured).
    """

    def __init__(self, path: Path | str, *, outbox: bool = False) -> None:
        self.path = Path(path)
        self._outbox = outbox
        """Whether stored readings also go to the TSDB outbox (only when a TSDB is configured)."""
        self._lock = threading.Lock()
        self._meters: dict[str, _MeterState] = {}
        self._boot_offsets: dict[clock.BootKey, int] = {}
        """Each boot's offset from ``boot_clocks``, kept so a batch costs no look-up (forgotten on rollback)."""
        self._pending = _Pending()
        with self._lock:
            self._db = connection.open_writer(self.path)

    def close(self) -> None:
        """Close once any running transaction has finished."""
        with self._lock:
            self._db.close()

    def reader(self) -> LedgerReader:
        return LedgerReader(self.path)

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
        """Forget TSDB outbox rows up to `last_id`, once the TSDB has taken them."""
        with self._transaction() as db:
            outbox.points_delivered(db, last_id)

    def _store_item(self, db: sqlite3.Connection, item: Item, received_at: int) -> IngestResult:
        if isinstance(item, ReadingsBatch):
            return self._ingest(db, item, received_at)
        if isinstance(item, GatewayStatus):
            return self._record_status(db, item, received_at)
        if isinstance(item, GatewayEvent):
            return IngestResult(new_event=gateways.record_event(db, item, received_at))
        delivery.reject(db, item, received_at)
        return IngestResult()

    def _ingest(self, db: sqlite3.Connection, batch: ReadingsBatch, received_at: int) -> IngestResult:
        """A batch: skipped whole when seen; else its trusted readings stored, unsynchronised ones
        re-dated (anchor known) or quarantined.

        Without a spool_id (older agents) seq restarts with the agent, so a seen seq proves nothing: the
        readings go through (meter, ts) dedup, and no gaps are tracked.
        """
        key = (batch.site, batch.gateway, batch.spool_id or "")
        seen = delivery.seen(db, key, batch.seq)
        if seen and batch.spool_id is not None:
            return IngestResult(duplicates=len(batch.readings), duplicate_batch=True)
        missing = 0 if seen or batch.spool_id is None else delivery.track_seq(db, key, batch.seq, received_at)
        delivery.record_batch(db, key, batch.seq, len(batch.readings), received_at)
        boot = None if batch.boot_id is None else (batch.site, batch.gateway, batch.boot_id)
        offset = None if boot is None else clock.anchor_offset(db, boot)
        reference = offset
        trusted: list[Reading] = []
        quarantined: dict[QuarantineReason, int] = {}
        corrected = 0
        stepped: list[Reading] = []
        step_ms = 0
        for reading in batch.readings:
            if reading.clock is not ClockState.UNSYNCED:
                if boot is not None and reading.mono_ms is not None:
                    if reference is None:
                        reference = self._boot_offset(db, boot, reading.ts - reading.mono_ms)
                    step = reading.ts - reading.mono_ms - reference
                    if abs(step) > CLOCK_STEP_TOLERANCE_MS:
                        step_ms = step
                        reading = redate(reading, reference)
                        stepped.append(reading)
                trusted.append(reading)
            elif offset is not None and reading.mono_ms is not None:
                trusted.append(redate(reading, offset))
                corrected += 1
            else:
                reason = (
                    QuarantineReason.NO_MONOTONIC_TIME
                    if batch.boot_id is None or reading.mono_ms is None
                    else QuarantineReason.AWAITING_ANCHOR
                )
                if clock.quarantine(
                    db, batch.site, batch.gateway, batch.boot_id, reading, reason, received_at
                ):
                    quarantined[reason] = quarantined.get(reason, 0) + 1
        stored = self._store_readings(db, batch.site, batch.gateway, trusted)
        duplicates = len(batch.readings) - stored.accepted - sum(quarantined.values())
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
        )

    def _store_readings(
        self, db: sqlite3.Connection, site: str, gateway: str, new_readings: list[Reading]
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
        for reading in sorted(new_readings, key=_ts):
            state = self._meter_state(db, reading.meter)
            formatted = line_protocol.formatted_values(reading.values)
            values_json = readings.values_json(formatted)
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
                if not readings.insert(db, row):
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
            outbox.add_points(db, points)
        return IngestResult(
            accepted=len(new),
            duplicates=len(new_readings) - len(new),
            counter_resets=resets,
            outbox_rows=int(bool(points)),
            outbox_points=len(points),
        )

    def _meter_state(self, db: sqlite3.Connection, meter: str) -> _MeterState:
        state = self._meters.get(meter)
        if state is None:
            state = self._meters[meter] = _MeterState(readings.newest_ts(db, meter))
        return state

    def _newest_sample(
        self, db: sqlite3.Connection, meter: str, state: _MeterState, quantity: str
    ) -> CounterSample | None:
        if quantity not in state.counters:
            self._flush_readings(db)
            state.counters[quantity] = intervals.newest_sample(db, meter, quantity)
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
                meters[meter] = MeterSeen(site, gateway, newest.profile, first, newest.ts)
            elif newest.ts >= where.last_seen:
                meters[meter] = MeterSeen(
                    site, gateway, newest.profile, min(first, where.first_seen), newest.ts
                )
            else:
                meters[meter] = where._replace(first_seen=min(first, where.first_seen))

    def _flush_readings(self, db: sqlite3.Connection) -> None:
        if self._pending.readings:
            readings.append(db, self._pending.readings)
            self._pending.readings = []

    def _flush(self, db: sqlite3.Connection) -> None:
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
                        values,
                        reading.quality.value,
                        json.dumps({k: v.value for k, v in reading.value_quality.items()}),
                        reading.clock.value,
                    )
                    for meter, (reading, values) in pending.latest.items()
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
            new = CounterSample(ts, value)
            newest = self._newest_sample(db, meter, state, quantity)
            if newest is None or ts > newest.ts:
                state.counters[quantity] = new
                if newest is not None:
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
        self, db: sqlite3.Connection, meter_id: str, quantity: str, step: CounterStep, sign: Literal[1, -1]
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

    def _boot_offset(self, db: sqlite3.Connection, boot: clock.BootKey, seen_ms: int) -> int:
        """The boot's clock offset when no anchor gave it: the first synchronised reading's, kept."""
        if boot not in self._boot_offsets:
            self._boot_offsets[boot] = clock.boot_offset(db, boot, seen_ms)
        return self._boot_offsets[boot]

    def _record_status(self, db: sqlite3.Connection, status: GatewayStatus, received_at: int) -> IngestResult:
        """Keep the status; its clock anchor re-dates the boot's quarantined readings."""
        gateways.record_status(db, status, received_at)
        anchor = status.clock_anchor
        if anchor is None:
            return IngestResult()
        clock.record_anchor(db, status.site, status.gateway, anchor)
        released = clock.release(db, (status.site, status.gateway, anchor.boot_id))
        redated = [redate(reading, anchor.offset_ms) for reading in released]
        stored = self._store_readings(db, status.site, status.gateway, redated)
        return IngestResult(
            accepted=stored.accepted,
            duplicates=stored.duplicates,
            counter_resets=stored.counter_resets,
            quarantined={QuarantineReason.AWAITING_ANCHOR: -len(released)} if released else {},
            corrected=len(released),
            outbox_rows=stored.outbox_rows,
            outbox_points=stored.outbox_points,
        )


def _ts(reading: Reading) -> int:
    return reading.ts
