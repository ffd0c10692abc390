"""Meters: every meter seen, its newest reading and its 15-minute intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from collector.api.deps import Now, Reader
from collector.api.params import Time
from collector.api.problems import InvalidRange, NotFound, problem, require_order
from collector.store import IntervalRow
from kilowatch.mqtt_contract import ClockState, Quality
from kilowatch.timebase import SLOT_HOURS, SLOT_MS, to_ms, utc_datetime, utc_datetime_or_none

DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=31)


class MeterOut(BaseModel):
    id: str
    site: str
    gateway: str
    profile: str = Field(description="Device profile id")
    first_seen: datetime | None = Field(
        description="Event time of the oldest reading received (null: no calendar date, see below)"
    )
    last_seen: datetime | None = Field(
        description="Event time of the newest reading received (null: no calendar date; a ledger written "
        "before the collector held times to a window may keep one past year 9999)"
    )


class LatestOut(BaseModel):
    meter: str
    ts: datetime | None = Field(
        description="When the meter was read (null: no calendar date, as for /meters)"
    )
    values: dict[str, float] = Field(description="By canonical quantity name")
    quality: Quality
    value_quality: dict[str, Quality] = Field(description="Quality of each value that is not good")
    value_reasons: dict[str, str] = Field(
        description="Why each bad value is bad (outside its physical range, or a counter rising faster than "
        "the meter can); bad values are not in `values`"
    )
    clock: ClockState = Field(description="The gateway's clock state when it stamped `ts`")


class IntervalOut(BaseModel):
    start: datetime
    end: datetime
    energy_import_kwh: float | None = Field(description="Imported energy; null = no counter data")
    energy_export_kwh: float | None = Field(description="Exported energy; null = no counter data")
    mean_kw: float | None = Field(description="Mean active power: (import - export) kWh / 0.25 h")
    max_kw: float | None = Field(description="Highest active power sampled in the interval")
    samples: int = Field(description="Readings whose time falls in the interval")


class IntervalsOut(BaseModel):
    meter: str
    start: datetime = Field(description="Start of the requested range")
    end: datetime = Field(description="End of the requested range (exclusive)")
    intervals: list[IntervalOut] = Field(
        description="15-minute intervals overlapping the range, oldest first"
    )


class UnknownMeter(NotFound):
    def __init__(self, meter_id: str) -> None:
        super().__init__(f"unknown meter {meter_id!r}")


router = APIRouter(prefix="/api/v1/meters", tags=["meters"])


@router.get("")
def list_meters(reader: Reader) -> list[MeterOut]:
    return [
        MeterOut(
            id=m.meter_id,
            site=m.site,
            gateway=m.gateway,
            profile=m.profile,
            first_seen=utc_datetime_or_none(m.first_seen),
            last_seen=utc_datetime_or_none(m.last_seen),
        )
        for m in reader.meters()
    ]


@router.get("/{meter_id}/latest", responses={404: problem("Unknown meter")})
def latest(meter_id: str, reader: Reader) -> LatestOut:
    row = reader.latest(meter_id)
    if row is None:
        raise UnknownMeter(meter_id)
    return LatestOut(
        meter=row.meter_id,
        ts=utc_datetime_or_none(row.ts),
        values=row.values,
        quality=row.quality,
        value_quality=row.value_quality,
        value_reasons=row.value_reasons,
        clock=row.clock,
    )


@router.get("/{meter_id}/intervals", responses={404: problem("Unknown meter"), 422: problem("Invalid range")})
def intervals(
    meter_id: str,
    reader: Reader,
    now: Now,
    start: Annotated[
        Time | None, Query(alias="from", description="ISO 8601 with offset; default: `to` - 24 h")
    ] = None,
    end: Annotated[Time | None, Query(alias="to", description="ISO 8601 with offset; default: now")] = None,
) -> IntervalsOut:
    end = end or now
    start = start or end - DEFAULT_RANGE
    require_order(start, end)
    if end - start > MAX_RANGE:
        raise InvalidRange(f"the range is longer than {MAX_RANGE.days} days; ask in pieces")
    if reader.meter(meter_id) is None:
        raise UnknownMeter(meter_id)
    return IntervalsOut(
        meter=meter_id,
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        intervals=[_interval_out(row) for row in reader.intervals(meter_id, to_ms(start), to_ms(end))],
    )


def _interval_out(row: IntervalRow) -> IntervalOut:
    imported, exported = row.energy_import_kwh, row.energy_export_kwh
    return IntervalOut(
        start=utc_datetime(row.start_ms),
        end=utc_datetime(row.start_ms + SLOT_MS),
        energy_import_kwh=imported,
        energy_export_kwh=exported,
        mean_kw=None if imported is None else (imported - (exported or 0.0)) / SLOT_HOURS,
        max_kw=row.max_kw,
        samples=row.samples,
    )
