"""Gateway clocks as the ledger keeps them: anchors and boot offsets, the spans a clock had stepped, and
the quarantine of readings waiting to be re-dated."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from collector.store.connection import Db
from kilowatch.mqtt_contract import INT64_MAX, ClockAnchor, Reading

BootKey = tuple[str, str, str]
"""(site, gateway, boot_id)."""

_STEP_MERGE_MS = 10 * 60_000
"""Stepped readings this close in time belong to one span."""


class QuarantineReason(StrEnum):
    """Why a reading waits in quarantine; the ``reason`` column and metric label."""

    AWAITING_ANCHOR = "awaiting_clock_anchor"
    NO_MONOTONIC_TIME = "no_monotonic_time"
    IMPLAUSIBLE_TIME = "implausible_time"

    @property
    def detail(self) -> str:
        return _REASON_DETAIL[self]


_REASON_DETAIL = {
    QuarantineReason.AWAITING_ANCHOR: "stamped by an unsynchronised clock; waiting for the gateway's clock "
    "anchor for its boot to re-date it",
    QuarantineReason.NO_MONOTONIC_TIME: "no monotonic time to re-date it",
    QuarantineReason.IMPLAUSIBLE_TIME: "its time lies outside the collector's window (too far in the future, "
    "or older than the retention): never stored, so it can neither pin a meter's latest reading nor book energy",
}


@dataclass(frozen=True, slots=True)
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


def anchor_offset(db: Db, key: BootKey) -> int | None:
    """The boot's clock offset (UTC minus boottime) its gateway announced once synchronised, if it did."""
    row = db.execute(
        "SELECT offset_ms FROM clock_anchors WHERE site = ? AND gateway = ? AND boot_id = ?", key
    ).fetchone()
    return None if row is None else int(row[0])


def record_anchor(db: Db, site: str, gateway: str, anchor: ClockAnchor) -> None:
    db.execute(
        "INSERT INTO clock_anchors VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, gateway, boot_id)"
        " DO UPDATE SET offset_ms = excluded.offset_ms, synced_at = excluded.synced_at",
        (site, gateway, anchor.boot_id, anchor.offset_ms, anchor.synced_at),
    )


def boot_offset(db: Db, key: BootKey, seen_ms: int) -> int:
    """The boot's offset kept from its first synchronised reading; `seen_ms` becomes it if none is kept."""
    db.execute("INSERT INTO boot_clocks VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", (*key, seen_ms))
    row = db.execute(
        "SELECT offset_ms FROM boot_clocks WHERE site = ? AND gateway = ? AND boot_id = ?", key
    ).fetchone()
    return int(row[0])


def record_step(db: Db, key: BootKey, start: int, end: int, step_ms: int) -> bool:
    """Fold the span [start, end] of re-dated readings (the clock `step_ms` off) into the boot's clock
    steps; True when it began a new span."""
    rows = db.execute(
        "DELETE FROM clock_steps WHERE site = ? AND gateway = ? AND boot_id = ? AND start_ts <= ? AND end_ts >= ?"
        " RETURNING start_ts, end_ts",
        (*key, min(end + _STEP_MERGE_MS, INT64_MAX), max(start - _STEP_MERGE_MS, 0)),  # the ledger's int64
    ).fetchall()
    for a, b in rows:
        start, end = min(start, a), max(end, b)
    db.execute("INSERT INTO clock_steps VALUES (?, ?, ?, ?, ?, ?)", (*key, start, end, step_ms))
    return not rows


def quarantine(
    db: Db,
    site: str,
    gateway: str,
    boot_id: str | None,
    reading: Reading,
    reason: QuarantineReason,
    received_at: int,
) -> bool:
    """Keep an unsynchronised reading aside; False when it already is (a resend)."""
    cursor = db.execute(
        "INSERT INTO quarantine"
        " (site, gateway, boot_id, mono_ms, meter_id, ts, reading, reason, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (site, gateway, boot_id, reading.mono_ms, reading.meter, reading.ts, reading.model_dump_json(),
         reason.value, received_at),
    )  # fmt: skip
    return cursor.rowcount == 1


def release(db: Db, key: BootKey) -> list[Reading]:
    """Take the boot's readings that await its anchor (and have a monotonic time) out of quarantine."""
    rows = db.execute(
        "DELETE FROM quarantine WHERE site = ? AND gateway = ? AND boot_id = ? AND mono_ms IS NOT NULL"
        " AND reason = ? RETURNING reading",
        (*key, QuarantineReason.AWAITING_ANCHOR.value),
    ).fetchall()
    return [Reading.model_validate_json(reading) for (reading,) in rows]


class ClockStepSpan(NamedTuple):
    """A span in which a gateway's synchronised clock had stepped away (its readings were re-dated)."""

    gateway: str
    start_ts: int
    end_ts: int
