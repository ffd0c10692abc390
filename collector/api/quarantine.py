"""Quarantine: readings stamped by an unsynchronised gateway clock that could not be re-dated yet, and
readings whose time lies outside the collector's window."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from collector.api.deps import Reader, Viewer, viewer
from collector.api.paging import LINK_HEADER, Paged
from collector.store import QuarantineReason
from kilowatch.timebase import utc_datetime, utc_datetime_or_none


class QuarantinedOut(BaseModel):
    id: int
    meter: str
    site: str
    gateway: str
    ts: datetime | None = Field(
        description="As stamped by the gateway's clock: not to be trusted; null when no calendar date (past "
        "year 9999, see `ts_ms`)"
    )
    ts_ms: int = Field(description="The same, UTC milliseconds since the epoch")
    boot_id: str | None = Field(description="The boot whose monotonic clock `mono_ms` counts on")
    mono_ms: int | None = Field(description="The gateway's monotonic clock when the meter was read")
    values: dict[str, float] = Field(description="By canonical quantity name")
    reason: QuarantineReason
    detail: str = Field(description="The reason, for a person")
    received_at: datetime


router = APIRouter(prefix="/api/v1", tags=["accounting"], dependencies=[Depends(viewer)])


@router.get("/quarantine", responses={200: {"headers": LINK_HEADER}})
def list_quarantine(
    reader: Reader,
    principal: Viewer,
    page: Paged,
    meter: Annotated[str | None, Query(description="Only this meter")] = None,
) -> list[QuarantinedOut]:
    """Readings kept out of readings and intervals (stamped by an unsynchronised clock, or at an implausible
    time), oldest first."""
    return [
        QuarantinedOut(
            id=row.id,
            meter=row.meter_id,
            site=row.site,
            gateway=row.gateway,
            ts=utc_datetime_or_none(row.ts),
            ts_ms=row.ts,
            boot_id=row.boot_id,
            mono_ms=row.mono_ms,
            values=row.reading.values,
            reason=row.reason,
            detail=row.reason.detail,
            received_at=utc_datetime(row.received_at),
        )
        for row in page.take(lambda n: reader.quarantine(meter, n), lambda row: principal.sees(row.site))
    ]
