"""Meters: every meter seen, its newest reading and its 15-minute intervals."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import pydantic_core
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, TypeAdapter

from collector.access import Principal
from collector.api.deps import Now, Reader, Viewer, require_site, viewer
from collector.api.paging import LINK_HEADER, Paged
from collector.api.params import Time
from collector.api.problems import InvalidRange, NotFound, problem, require_order
from collector.store import LedgerReader
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


router = APIRouter(prefix="/api/v1/meters", tags=["meters"], dependencies=[Depends(viewer)])


@router.get("", responses={200: {"headers": LINK_HEADER}})
def list_meters(reader: Reader, principal: Viewer, page: Paged) -> list[MeterOut]:
    """Every meter seen, by id."""
    return [
        MeterOut(
            id=m.meter_id,
            site=m.site,
            gateway=m.gateway,
            profile=m.profile,
            first_seen=utc_datetime_or_none(m.first_seen),
            last_seen=utc_datetime_or_none(m.last_seen),
        )
        for m in page.take(lambda _: reader.meters(), lambda m: principal.sees(m.site))
    ]


def _check_meter(reader: LedgerReader, principal: Principal, meter_id: str) -> None:
    """404 for an unknown meter, 403 for a meter of a site the principal may not see."""
    meter = reader.meter(meter_id)
    if meter is None:
        raise UnknownMeter(meter_id)
    require_site(principal, meter.site)


@router.get("/{meter_id}/latest", responses={404: problem("Unknown meter"), 403: problem("Not your site")})
def latest(meter_id: str, reader: Reader, principal: Viewer) -> LatestOut:
    _check_meter(reader, principal, meter_id)
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


INTERVALS_CSV = "text/csv"
_CSV_COLUMNS = list(IntervalOut.model_fields)
_INTERVAL_LIST = TypeAdapter(list[IntervalOut])
SLOT = timedelta(milliseconds=SLOT_MS)
CLOSED_MAX_AGE_S = 3600
"""How long a client may reuse a range of closed intervals without asking again. Not `immutable`: a
gateway that was cut off flushes its spool later, and re-dated readings land late, both in closed intervals."""


@router.get(
    "/{meter_id}/intervals",
    response_model=IntervalsOut,
    responses={
        200: {
            "content": {INTERVALS_CSV: {"schema": {"type": "string"}}},
            "description": "JSON, or CSV (one row per interval, columns as the JSON's) with `Accept: text/csv` "
            "or `format=csv`; an `ETag` to ask again with `If-None-Match`",
            "headers": {
                "ETag": {"description": "The answer's version", "schema": {"type": "string"}},
                "Cache-Control": {
                    "description": f"A range of closed intervals: `private, max-age={CLOSED_MAX_AGE_S}`; "
                    "one with the current interval: `private, no-cache`",
                    "schema": {"type": "string"},
                },
            },
        },
        304: {"description": "Not modified: the `If-None-Match` ETag is the answer's"},
        403: problem("Not your site"),
        404: problem("Unknown meter"),
        422: problem("Invalid range"),
    },
)
def get_intervals(
    meter_id: str,
    reader: Reader,
    principal: Viewer,
    now: Now,
    request: Request,
    start: Annotated[
        Time | None, Query(alias="from", description="ISO 8601 with offset; default: `to` - 24 h")
    ] = None,
    end: Annotated[Time | None, Query(alias="to", description="ISO 8601 with offset; default: now")] = None,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="csv: the same as `Accept: text/csv`; default: by the Accept header, else JSON"),
    ] = None,
) -> Response:
    """A meter's 15-minute intervals over at most 31 days, oldest first."""
    start, end, rows = _window(meter_id, reader, principal, now, start, end)
    if format == "csv" or (format is None and INTERVALS_CSV in request.headers.get("accept", "")):
        text = io.StringIO()
        writer = csv.DictWriter(text, _CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(pydantic_core.to_jsonable_python(rows))
        body, media_type = text.getvalue().encode(), INTERVALS_CSV
    else:
        body = pydantic_core.to_json({"meter": meter_id, "start": start, "end": end, "intervals": rows})
        media_type = "application/json"
    closed = to_ms(end) <= to_ms(now) // SLOT_MS * SLOT_MS
    return _conditional(
        request, body, media_type, f"private, max-age={CLOSED_MAX_AGE_S}" if closed else "private, no-cache"
    )


def intervals(
    meter_id: str,
    reader: LedgerReader,
    principal: Principal,
    now: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
) -> IntervalsOut:
    """The intervals overlapping [start, end) (default: the 24 h before now) of a meter the principal sees."""
    start, end, rows = _window(meter_id, reader, principal, now, start, end)
    return IntervalsOut.model_construct(
        meter=meter_id, start=start, end=end, intervals=_INTERVAL_LIST.validate_python(rows)
    )


def _window(
    meter_id: str,
    reader: LedgerReader,
    principal: Principal,
    now: datetime,
    start: datetime | None,
    end: datetime | None,
) -> tuple[datetime, datetime, list[dict[str, Any]]]:
    """The range in UTC and its intervals as :class:`IntervalOut`'s fields: plain dicts, because 31 days are
    ~3,000 rows, and a model per row cost more than the query (the route serialises them as they are,
    with pydantic's core, the same way a model would be)."""
    end = end or now
    start = start or end - DEFAULT_RANGE
    require_order(start, end)
    if end - start > MAX_RANGE:
        raise InvalidRange(f"the range is longer than {MAX_RANGE.days} days; ask in pieces")
    _check_meter(reader, principal, meter_id)
    rows = [
        {
            "start": (began := utc_datetime(row.start_ms)),
            "end": began + SLOT,
            "energy_import_kwh": row.energy_import_kwh,
            "energy_export_kwh": row.energy_export_kwh,
            "mean_kw": None
            if row.energy_import_kwh is None
            else (row.energy_import_kwh - (row.energy_export_kwh or 0.0)) / SLOT_HOURS,
            "max_kw": row.max_kw,
            "samples": row.samples,
        }
        for row in reader.intervals(meter_id, to_ms(start), to_ms(end))
    ]
    return start.astimezone(UTC), end.astimezone(UTC), rows


def _conditional(request: Request, body: bytes, media_type: str, cache_control: str) -> Response:
    """`body` with a strong ETag (a digest of it) and `cache_control`; 304 without it when the request's
    If-None-Match names that ETag (or is `*`)."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": "Accept, Authorization, Cookie"}
    asked = {tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")}
    if etag in asked or "*" in asked:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
