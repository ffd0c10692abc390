"""Readings, each meter's latest one, and the meters seen: rows and the writer's statements.

A reading keeps only what the ledger's readers use (see migration 6 in :mod:`collector.store.schema`):
its counters and active power as columns, for the interval and detection queries, the quantities that tell
a frozen meter (:data:`~collector.detectors.series.MOVING`) as float32s in one blob, and its quality and
clock only when they are not good and synced. Every value goes to the TSDB (its outbox), and the newest
reading of each meter is kept whole in ``latest``. A meter is a small integer in ``readings``
(``meter_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from collector.detectors.series import MOVING, Sample
from collector.store import blocks
from collector.store.blocks import Block
from collector.store.connection import Db
from collector.store.schema import MOVING_FORMAT, pack_moving
from kilowatch.mqtt_contract import ClockState, Quality, Reading
from kilowatch.quantities import ACTIVE_POWER, ENERGY_EXPORT, ENERGY_IMPORT
from kilowatch.timebase import DAY_MS

COUNTERS = (ENERGY_IMPORT, ENERGY_EXPORT)
"""The cumulative counters intervals are computed from; also column names of `readings` and `intervals`."""

TRUSTED = f"(clock IS NULL OR clock != '{ClockState.UNSYNCED.value}')"
"""Readings whose time can be trusted (rows written before quarantine may be unsynchronised)."""

METER_KEY = "(SELECT id FROM meter_keys WHERE meter_id = ?)"
"""The key of the meter named by a parameter, in a statement on `readings`."""

# Column names below come from constants, never from input.
_COLUMNS = f"meter, ts, {ENERGY_IMPORT}, {ENERGY_EXPORT}, {ACTIVE_POWER}, moving, quality, clock"
_INSERT = f"INSERT INTO readings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"  # noqa: S608
# Appended readings are known to be new (see the writer's meter states): a plain INSERT, which fails loudly
# (and rolls the group back) rather than silently ignore a row should that knowledge ever be wrong.
_APPEND = f"INSERT INTO readings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_UPSERT_LATEST = (
    'INSERT INTO latest (meter_id, ts, "values", quality, value_quality, clock, value_reasons)'
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    ' ON CONFLICT (meter_id) DO UPDATE SET ts = excluded.ts, "values" = excluded."values",'
    " quality = excluded.quality, value_quality = excluded.value_quality, clock = excluded.clock,"
    " value_reasons = excluded.value_reasons WHERE excluded.ts > latest.ts"
)
_UPSERT_METER = (
    "INSERT INTO meters VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
    " site = CASE WHEN excluded.last_seen >= meters.last_seen THEN excluded.site ELSE meters.site END,"
    " gateway = CASE WHEN excluded.last_seen >= meters.last_seen THEN excluded.gateway ELSE meters.gateway END,"
    " profile = CASE WHEN excluded.last_seen >= meters.last_seen THEN excluded.profile ELSE meters.profile END,"
    " first_seen = CASE WHEN excluded.first_seen < meters.first_seen THEN excluded.first_seen"
    " ELSE meters.first_seen END,"
    " last_seen = CASE WHEN excluded.last_seen > meters.last_seen THEN excluded.last_seen ELSE meters.last_seen END"
)
_HOT = (
    f"SELECT ts, {ENERGY_IMPORT}, {ENERGY_EXPORT}, {ACTIVE_POWER}, moving, quality, clock FROM readings"  # noqa: S608 - column names are constants
    f" WHERE meter = {METER_KEY} AND ts >= ? AND ts < ? ORDER BY ts"
)
_COLD = (
    f"SELECT data FROM reading_blocks WHERE meter = {METER_KEY} AND day_ms > ? AND day_ms < ? ORDER BY day_ms"  # noqa: S608
)
_COLD_COUNT = (
    "SELECT first_ts >= :start AND last_ts < :end, readings, data FROM reading_blocks"  # noqa: S608 - a constant
    " WHERE meter = (SELECT id FROM meter_keys WHERE meter_id = :meter)"
    f" AND day_ms > :start - {DAY_MS} AND day_ms < :end"
)
_HOT_COUNT = f"SELECT count(*) FROM readings WHERE meter = {METER_KEY} AND ts >= ? AND ts < ?"  # noqa: S608
_NEWEST = (
    f"SELECT max(ts) FROM (SELECT max(ts) AS ts FROM readings WHERE meter = {METER_KEY}"  # noqa: S608
    f" UNION ALL SELECT max(last_ts) FROM reading_blocks WHERE meter = {METER_KEY}) AS newest"
)
_NEWEST_TRUSTED = f"SELECT max(ts) FROM readings WHERE meter = {METER_KEY} AND ts <= ? AND {TRUSTED}"  # noqa: S608
_NEWEST_COLD = (
    f"SELECT data FROM reading_blocks WHERE meter = {METER_KEY} AND day_ms <= ? ORDER BY day_ms DESC"  # noqa: S608
)
_NAN_MOVING = MOVING_FORMAT.pack(*[float("nan")] * len(MOVING))

ReadingParams = tuple[
    int, int, float | None, float | None, float | None, bytes | None, str | None, str | None
]
"""A `readings` row as statement parameters: meter key, ts, import, export, power, moving blob, quality
and clock (None: good, synced); a plain tuple: one is built per reading on the hot path."""


@dataclass(frozen=True, slots=True)
class MeterRow:
    meter_id: str
    site: str
    gateway: str
    profile: str
    first_seen: int
    last_seen: int


class MeterSeen(NamedTuple):
    """Where a meter is (of its newest reading) and the span it was seen in: a `meters` row to upsert."""

    site: str
    gateway: str
    profile: str
    first_seen: int
    last_seen: int


@dataclass(frozen=True, slots=True)
class LatestRow:
    meter_id: str
    ts: int
    values: dict[str, float]
    quality: Quality
    value_quality: dict[str, Quality]
    clock: ClockState
    value_reasons: dict[str, str]
    """Why each bad value is bad (the agent's word, or the collector's)."""


class LatestParams(NamedTuple):
    """A `latest` row to upsert (values, value qualities and reasons as JSON)."""

    meter_id: str
    ts: int
    values: str
    quality: str
    value_quality: str
    clock: str
    value_reasons: str


@dataclass(frozen=True, slots=True)
class ReadingRow:
    """A stored reading as the ledger keeps it: `values` holds its counters, power and the
    :data:`~collector.detectors.series.MOVING` quantities (as float32), not every quantity it carried."""

    meter_id: str
    ts: int
    values: dict[str, float]
    quality: Quality
    clock: ClockState


class MeterKeys:
    """The writer's cache of the meters' keys in ``meter_keys``; a key added in a transaction that rolls
    back is gone with it, so the writer forgets them all then (:meth:`forget`)."""

    def __init__(self) -> None:
        self._keys: dict[str, int] = {}

    def key(self, db: Db, meter: str) -> int:
        """The meter's key, added when the meter is new."""
        key = self._keys.get(meter)
        if key is None:
            row = db.execute("SELECT id FROM meter_keys WHERE meter_id = ?", (meter,)).fetchone()
            if row is None:
                row = db.execute(
                    "INSERT INTO meter_keys (meter_id) VALUES (?) RETURNING id", (meter,)
                ).fetchone()
            key = self._keys[meter] = int(row[0])
        return key

    def forget(self) -> None:
        self._keys.clear()


def row(key: int, reading: Reading) -> ReadingParams:
    """The `readings` row of a reading of the meter whose key is `key`."""
    values = reading.values
    quality, clock = reading.quality, reading.clock
    return (
        key,
        reading.ts,
        values.get(ENERGY_IMPORT),
        values.get(ENERGY_EXPORT),
        values.get(ACTIVE_POWER),
        pack_moving(values),
        None if quality is Quality.GOOD else quality.value,
        None if clock is ClockState.SYNCED else clock.value,
    )


def values_json(formatted: list[tuple[str, str]]) -> str:
    """What ``json.dumps(values)`` gives, from (name, ``float.__repr__``) pairs already made for the TSDB.

    Quantity names are canonical identifiers (nothing to escape) and values finite floats, which json
    writes with ``float.__repr__``: the JSON costs no second formatting of the values.
    """
    return "{" + ", ".join([f'"{name}": {text}' for name, text in formatted]) + "}"


def append(db: Db, rows: list[ReadingParams]) -> None:
    db.executemany(_APPEND, rows)


def insert(db: Db, row: ReadingParams) -> bool:
    """Store a reading unless its (meter, ts) is; True when it was new."""
    return db.execute(_INSERT, row).rowcount == 1


def newest_ts(db: Db, meter: str) -> int | None:
    """ts of the meter's newest stored reading, whatever its clock."""
    (newest,) = db.execute(_NEWEST, (meter, meter)).fetchone()
    return None if newest is None else int(newest)


def newest_trusted_ts(db: Db, meter: str, until_ms: int) -> int | None:
    """ts of the meter's newest reading at or before `until_ms` not stamped by an unsynchronised clock."""
    (newest,) = db.execute(_NEWEST_TRUSTED, (meter, until_ms)).fetchone()
    if newest is not None:
        return int(newest)
    for (data,) in db.execute(_NEWEST_COLD, (meter, until_ms)):
        block = blocks.decode(data)
        found = np.flatnonzero((block.ts <= until_ms) & _trusted(block))
        if found.size:
            return int(block.ts[found[-1]])
    return None


def count(db: Db, meter: str, start_ms: int, end_ms: int) -> int:
    """Stored readings (whatever their clock) with start_ms <= ts < end_ms."""
    (n,) = db.execute(_HOT_COUNT, (meter, start_ms, end_ms)).fetchone()
    for inside, readings, data in db.execute(_COLD_COUNT, {"meter": meter, "start": start_ms, "end": end_ms}):
        if inside:
            n += readings
        else:
            ts = blocks.decode(data).ts
            n += int(np.count_nonzero((ts >= start_ms) & (ts < end_ms)))
    return int(n)


def rows_block(rows: list[tuple[Any, ...]]) -> Block:
    """A block of `readings` rows (ts, import, export, power, moving, quality, clock), in ts order."""
    n = len(rows)
    ts, imported, exported, power, moving, quality, clock = zip(*rows, strict=True) if rows else ((),) * 7
    return Block(
        np.array(ts, dtype=np.int64),
        np.array(imported, dtype=np.float64),  # None becomes NaN
        np.array(exported, dtype=np.float64),
        np.array(power, dtype=np.float64),
        np.frombuffer(b"".join(m or _NAN_MOVING for m in moving), "<f4").reshape(n, len(MOVING)),
        list(quality),
        list(clock),
    )


def history(db: Db, meter: str, start_ms: int, end_ms: int) -> Block:
    """The meter's stored readings with start_ms <= ts < end_ms, oldest first: the blocks of the days they
    fall in, then the rows not packed yet."""
    cold = [blocks.decode(data) for (data,) in db.execute(_COLD, (meter, start_ms - DAY_MS, end_ms))]
    hot = rows_block(db.execute(_HOT, (meter, start_ms, end_ms)).fetchall())
    joined = Block.join([*cold, hot])
    return joined.where((joined.ts >= start_ms) & (joined.ts < end_ms)) if cold else joined


def _trusted(block: Block) -> npt.NDArray[np.bool_]:
    return np.array([c != ClockState.UNSYNCED.value for c in block.clock], dtype=np.bool_)


def upsert_latest(db: Db, rows: list[LatestParams]) -> None:
    """Each row replaces its meter's latest reading when it is newer."""
    db.executemany(_UPSERT_LATEST, rows)


def gateway_meters(db: Db, site: str, gateway: str) -> set[str]:
    """The meters whose newest reading came from the gateway."""
    rows = db.execute("SELECT meter_id FROM meters WHERE site = ? AND gateway = ?", (site, gateway))
    return {meter for (meter,) in rows}


def upsert_meters(db: Db, rows: list[tuple[str, MeterSeen]]) -> None:
    """Where each meter is follows its newest reading; first/last seen widen."""
    db.executemany(_UPSERT_METER, [(meter, *seen) for meter, seen in rows])


def power_samples(db: Db, meter_id: str, start_ms: int, end_ms: int) -> list[Sample]:
    """The meter's readings with power in [start_ms, end_ms), oldest first, in kW, with the quantities
    that tell a frozen meter: what the detectors judge (never a reading stamped by an unsynchronised
    clock)."""
    block = history(db, meter_id, start_ms, end_ms)
    block = block.where(_trusted(block) & ~np.isnan(block.power))
    moving = [tuple(None if v != v else v for v in row) for row in block.moving.tolist()]  # NaN: missing
    energy = [None if e != e else e for e in block.imported.tolist()]
    return [
        Sample(ts, w / 1000, e, m)
        for ts, w, e, m in zip(block.ts.tolist(), block.power.tolist(), energy, moving, strict=True)
    ]


def stored(db: Db, meter_id: str, start_ms: int, end_ms: int) -> list[ReadingRow]:
    """The meter's stored readings with start_ms <= ts < end_ms, oldest first."""
    block = history(db, meter_id, start_ms, end_ms)
    names = (*COUNTERS, ACTIVE_POWER, *MOVING)
    columns = np.column_stack((block.imported, block.exported, block.power, block.moving)).tolist()
    return [
        ReadingRow(
            meter_id,
            ts,
            {q: v for q, v in zip(names, values, strict=True) if v == v},  # NaN: missing
            Quality(quality or Quality.GOOD),
            ClockState(clock or ClockState.SYNCED),
        )
        for ts, values, quality, clock in zip(
            block.ts.tolist(), columns, block.quality, block.clock, strict=True
        )
    ]
