"""Helpers for the collector tests: message builders at fixed times."""

from __future__ import annotations

from datetime import UTC, datetime

from kilowatch.mqtt_contract import SCHEMA_VERSION, ClockState, Quality, Reading, ReadingsBatch


def at(hour: int, minute: int = 0, second: int = 0, day: int = 1) -> int:
    """UTC ms on 2024-05-<day> at the given time."""
    return int(datetime(2024, 5, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def reading(
    ts: int,
    *,
    meter: str = "m1",
    imp: float | None = None,
    exp: float | None = None,
    power_w: float | None = None,
    clock: ClockState = ClockState.SYNCED,
) -> Reading:
    values = {
        name: value
        for name, value in (
            ("energy_import_kwh", imp),
            ("energy_export_kwh", exp),
            ("active_power_w", power_w),
        )
        if value is not None
    }
    return Reading(
        meter=meter, profile="eastron-sdm630", ts=ts, values=values, quality=Quality.GOOD, clock=clock
    )


def batch(*readings: Reading, site: str = "site1", gateway: str = "gw1", seq: int = 0) -> ReadingsBatch:
    return ReadingsBatch(
        schema_version=SCHEMA_VERSION,
        site=site,
        gateway=gateway,
        seq=seq,
        sent_at=at(12),
        readings=list(readings),
    )
