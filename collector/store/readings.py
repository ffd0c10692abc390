"""Readings, each meter's latest one, and the meters seen: rows and the writer's statements.

A reading's values are stored as JSON in ``readings."values"`` (the TSDB's line protocol goes only to the
TSDB outbox); the counters and active power are also columns, for the interval and detection queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from collector.detectors.series import MOVING, Sample
from collector.store.connection import Db, Dialect
from kilowatch.mqtt_contract import ClockState, Quality
from kilowatch.quantities import ACTIVE_POWER, ENERGY_EXPORT, ENERGY_IMPORT

COUNTERS = (ENERGY_IMPORT, ENERGY_EXPORT)
"""The cumulative counters intervals are computed from; also column names of `readings` and `intervals`."""

TRUSTED = f"clock != '{ClockState.UNSYNCED.value}'"
"""Readings whose time can be trusted (rows written before quarantine may be unsynchronised)."""

# Column names below come from constants, never from input.
_COLUMNS = f'meter_id, ts, {ENERGY_IMPORT}, {ENERGY_EXPORT}, {ACTIVE_POWER}, "values", quality, clock'
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
_VALUES = '"values"'
_POWER = {
    dialect: f"SELECT ts, {ACTIVE_POWER}, {ENERGY_IMPORT}, {dialect.json_array(_VALUES, MOVING)} FROM readings"  # noqa: S608 - column names are constants
    f" WHERE meter_id = ? AND ts >= ? AND ts < ? AND {TRUSTED} AND {ACTIVE_POWER} IS NOT NULL ORDER BY ts"
    for dialect in Dialect
}

ReadingParams = tuple[str, int, float | None, float | None, float | None, str, str, str]
"""A `readings` row as statement parameters: meter, ts, import, export, power, values JSON, quality, clock
(a plain tuple: one is built per reading on the hot path)."""


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
    meter_id: str
    ts: int
    values: dict[str, float]
    quality: Quality
    clock: ClockState


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
    (newest,) = db.execute("SELECT max(ts) FROM readings WHERE meter_id = ?", (meter,)).fetchone()
    return None if newest is None else int(newest)


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
    return [
        Sample(ts, w / 1000, e, tuple(json.loads(moving)))
        for ts, w, e, moving in db.execute(_POWER[db.dialect], (meter_id, start_ms, end_ms))
    ]
