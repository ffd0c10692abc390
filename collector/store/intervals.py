"""15-minute interval energy and the counter events kept out of it: rows and the writer's statements."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from collector.intervals import CounterSample, CounterStep
from collector.store.connection import Db
from collector.store.readings import COUNTERS, METER_KEY, TRUSTED
from kilowatch.quantities import ENERGY_EXPORT, ENERGY_IMPORT
from kilowatch.timebase import DAY_MS, OFFSET_MS, day_start_ms

# Column names below come from the COUNTERS constant, never from input.
_METER = "(SELECT id FROM meter_keys WHERE meter_id = :meter)"
_NEIGHBOURS = {
    q: f"""
    SELECT * FROM (SELECT ts, {q} FROM readings WHERE meter = {_METER} AND {q} IS NOT NULL AND {TRUSTED}
                   AND ts < :ts ORDER BY ts DESC LIMIT 1) AS prev
    UNION ALL
    SELECT * FROM (SELECT ts, {q} FROM readings WHERE meter = {_METER} AND {q} IS NOT NULL AND {TRUSTED}
                   AND ts > :ts ORDER BY ts LIMIT 1) AS next
    """  # noqa: S608
    for q in COUNTERS
}
_NEWEST = {
    q: f"SELECT ts, {q} FROM readings WHERE meter = {METER_KEY} AND {q} IS NOT NULL AND {TRUSTED}"  # noqa: S608
    " ORDER BY ts DESC LIMIT 1"
    for q in COUNTERS
}


def _added(q: str) -> str:
    """Counter `q`'s bucket energy plus the transaction's (:q NULL: no step covers the bucket in this
    transaction, it keeps its value). Taking a step out can leave rounding residue; energy is never
    negative, so it stops at 0."""
    total = f"coalesce(intervals.{q}, 0.0) + :{q}"
    return f"{q} = CASE WHEN :{q} IS NULL THEN intervals.{q} WHEN {total} < 0 THEN 0.0 ELSE {total} END"


# What one transaction adds to one bucket, in one statement: each energy, the largest kW (NULL: none
# known) and the number of samples.
_ADD_TO_BUCKET = (
    f"INSERT INTO intervals (meter_id, start_ms, {ENERGY_IMPORT}, {ENERGY_EXPORT}, max_kw, samples)"  # noqa: S608
    f" VALUES (:meter, :start, {', '.join(f'CASE WHEN :{q} < 0 THEN 0.0 ELSE :{q} END' for q in COUNTERS)},"
    " :kw, :samples) ON CONFLICT (meter_id, start_ms) DO UPDATE SET"
    f" {', '.join(_added(q) for q in COUNTERS)},"
    " max_kw = CASE WHEN intervals.max_kw IS NULL OR :kw > intervals.max_kw THEN coalesce(:kw, intervals.max_kw)"
    " ELSE intervals.max_kw END, samples = intervals.samples + :samples"
)


@dataclass(frozen=True, slots=True)
class IntervalRow:
    meter_id: str
    start_ms: int
    energy_import_kwh: float | None
    energy_export_kwh: float | None
    max_kw: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class DayEnergy:
    """One meter's imported energy on one local (Vietnam) day, from its 15-minute intervals."""

    meter_id: str
    day: int
    """Local day number (:func:`kilowatch.timebase.local_day`)."""
    energy_import_kwh: float
    intervals: int
    """Intervals of the day that have imported energy (96 for a whole day)."""


_DAILY = (
    f"SELECT meter_id, (start_ms + {OFFSET_MS}) / {DAY_MS} AS day, sum({ENERGY_IMPORT}), count({ENERGY_IMPORT})"  # noqa: S608
    f" FROM intervals WHERE meter_id = ? AND start_ms >= ? AND start_ms < ? AND {ENERGY_IMPORT} IS NOT NULL"
    " GROUP BY meter_id, day ORDER BY day"
)


def daily_energy(db: Db, meter: str, first_day: int, end_day: int) -> list[DayEnergy]:
    """The meter's days from local day `first_day` up to `end_day` (exclusive) that have any energy."""
    rows = db.execute(_DAILY, (meter, day_start_ms(first_day), day_start_ms(end_day))).fetchall()
    return [DayEnergy(m, int(day), float(kwh), int(n)) for m, day, kwh, n in rows]


@dataclass(slots=True)
class BucketSums:
    """What one transaction adds to one (meter, bucket); an energy is None when no step touched it.

    The energy fields are named as the counters (see :data:`COUNTERS`), so a step adds to
    ``getattr(sums, quantity)``.
    """

    energy_import_kwh: float | None = None
    energy_export_kwh: float | None = None
    max_kw: float | None = None
    samples: int = 0


class CounterEventKind(StrEnum):
    RESET = "reset"
    """The counter went backwards (reset or replaced meter); the step counts as 0."""
    GAP = "gap"
    """The readings are too far apart to say when the energy flowed; the step is in no interval."""


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """A step between two consecutive readings of a counter that intervals leave out."""

    meter_id: str
    quantity: str
    kind: CounterEventKind
    prev_ts: int
    prev_value: float
    ts: int
    value: float

    @classmethod
    def of(cls, meter_id: str, quantity: str, step: CounterStep) -> CounterEvent | None:
        """The event a step is, if any: a reset (also across a gap), else a gap."""
        if step.reset:
            kind = CounterEventKind.RESET
        elif step.gap:
            kind = CounterEventKind.GAP
        else:
            return None
        return cls(meter_id, quantity, kind, step.start.ts, step.start.value, step.end.ts, step.end.value)


def newest_sample(db: Db, meter: str, quantity: str) -> CounterSample | None:
    """The meter's newest trusted stored sample of a counter."""
    row = db.execute(_NEWEST[quantity], (meter,)).fetchone()
    return None if row is None else CounterSample(*row)


def neighbours(
    db: Db, meter: str, quantity: str, ts: int
) -> tuple[CounterSample | None, CounterSample | None]:
    """The trusted stored samples of a counter just before and just after `ts`."""
    prev = nxt = None
    for stored_ts, stored in db.execute(_NEIGHBOURS[quantity], {"meter": meter, "ts": ts}):
        if stored_ts < ts:
            prev = CounterSample(stored_ts, stored)
        else:
            nxt = CounterSample(stored_ts, stored)
    return prev, nxt


def add_to_buckets(db: Db, buckets: dict[tuple[str, int], BucketSums]) -> None:
    """Add what a transaction summed to each (meter, bucket start)."""
    db.executemany(
        _ADD_TO_BUCKET,
        [
            {
                "meter": meter,
                "start": start,
                ENERGY_IMPORT: sums.energy_import_kwh,
                ENERGY_EXPORT: sums.energy_export_kwh,
                "kw": sums.max_kw,
                "samples": sums.samples,
            }
            for (meter, start), sums in buckets.items()
        ],
    )


def insert_event(db: Db, event: CounterEvent) -> None:
    db.execute(
        "INSERT INTO counter_events VALUES (?, ?, ?, ?, ?, ?, ?)",
        (event.meter_id, event.quantity, event.kind.value, event.prev_ts, event.prev_value, event.ts,
         event.value),
    )  # fmt: skip


def delete_event(db: Db, event: CounterEvent) -> None:
    db.execute(
        "DELETE FROM counter_events WHERE meter_id = ? AND quantity = ? AND ts = ?",
        (event.meter_id, event.quantity, event.ts),
    )
