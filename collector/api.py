"""The collector's HTTP API: meters, their latest values and 15-minute intervals; what is quarantined,
missing or reported by gateways; health and metrics.

Every request reads the ledger through a read-only connection of its own (endpoints are plain ``def``,
run in FastAPI's thread pool), so reads never wait for ingestion. Response models are the public
contract and independent of the ledger's rows; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, Field

from collector.detectors.config import Sites
from collector.intervals import HOURS_PER_INTERVAL, INTERVAL_MS
from collector.metrics import CollectorMetrics
from collector.store import IntervalRow, LedgerReader, QuarantineReason
from kilowatch import __version__
from kilowatch.mqtt_contract import ClockState, GatewayEventKind, GatewayState, Quality

DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=31)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


class MeterOut(BaseModel):
    id: str
    site: str
    gateway: str
    profile: str = Field(description="Device profile id")
    first_seen: datetime = Field(description="Event time of the oldest reading received")
    last_seen: datetime = Field(description="Event time of the newest reading received")


class LatestOut(BaseModel):
    meter: str
    ts: datetime = Field(description="When the meter was read")
    values: dict[str, float] = Field(description="By canonical quantity name")
    quality: Quality
    value_quality: dict[str, Quality] = Field(description="Quality of each value that is not good")
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


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "failing"] = Field(
        description="ok; degraded = no MQTT connection (the API still serves); failing = ledger unreadable"
    )
    mqtt_connected: bool
    ledger_ok: bool


class QuarantinedOut(BaseModel):
    id: int
    meter: str
    site: str
    gateway: str
    ts: datetime = Field(description="As stamped by the gateway's unsynchronised clock: not to be trusted")
    boot_id: str | None = Field(description="The boot whose monotonic clock `mono_ms` counts on")
    mono_ms: int | None = Field(description="The gateway's monotonic clock when the meter was read")
    values: dict[str, float] = Field(description="By canonical quantity name")
    reason: QuarantineReason
    detail: str = Field(description="The reason, for a person")
    received_at: datetime


class GatewayOut(BaseModel):
    site: str
    gateway: str
    state: GatewayState = Field(description="online (its birth) or offline (its last will, or a clean stop)")
    ts: datetime = Field(description="When the gateway wrote that status (gateway clock)")
    agent_version: str
    meters: list[str] = Field(description="The meters it polls")
    received_at: datetime = Field(description="When the collector received the status")


class GatewayEventOut(BaseModel):
    site: str
    gateway: str
    ts: datetime = Field(description="When it happened (gateway clock)")
    kind: GatewayEventKind
    readings: int = Field(description="Readings it concerns (evicted, or not stored)")
    oldest_ts: datetime | None
    newest_ts: datetime | None
    detail: str
    received_at: datetime


class SeqGapOut(BaseModel):
    site: str
    gateway: str
    spool_id: str | None
    first_seq: int = Field(description="First batch number that never arrived")
    last_seq: int = Field(description="Last batch number that never arrived")
    batches: int = Field(description="last_seq - first_seq + 1")
    detected_at: datetime


class ErrorOut(BaseModel):
    detail: str


class ApiError(Exception):
    """A request the API refuses; `status_code` is its HTTP status."""

    status_code = 400


class UnknownMeter(ApiError):
    status_code = 404

    def __init__(self, meter_id: str) -> None:
        super().__init__(f"unknown meter {meter_id!r}")


class InvalidRange(ApiError):
    status_code = 422


@dataclass(frozen=True)
class ApiContext:
    """What the endpoints need from the running collector."""

    ledger_path: Path
    metrics: CollectorMetrics
    mqtt_connected: Callable[[], bool]
    sites: Sites | None = None
    """The detection settings, when detection runs: sites' calendars and meters for the reports."""


def _context(request: Request) -> ApiContext:
    context = request.app.state.context
    assert isinstance(context, ApiContext)
    return context


def _reader(context: Annotated[ApiContext, Depends(_context)]) -> Iterator[LedgerReader]:
    with LedgerReader(context.ledger_path) as reader:
        yield reader


Context = Annotated[ApiContext, Depends(_context)]
Reader = Annotated[LedgerReader, Depends(_reader)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "Unknown meter"}}

meters = APIRouter(prefix="/api/v1/meters", tags=["meters"])


@meters.get("")
def list_meters(reader: Reader) -> list[MeterOut]:
    return [
        MeterOut(
            id=m.meter_id,
            site=m.site,
            gateway=m.gateway,
            profile=m.profile,
            first_seen=_to_datetime(m.first_seen),
            last_seen=_to_datetime(m.last_seen),
        )
        for m in reader.meters()
    ]


@meters.get("/{meter_id}/latest", responses=_NOT_FOUND)
def latest(meter_id: str, reader: Reader) -> LatestOut:
    row = reader.latest(meter_id)
    if row is None:
        raise UnknownMeter(meter_id)
    return LatestOut(
        meter=row.meter_id,
        ts=_to_datetime(row.ts),
        values=row.values,
        quality=row.quality,
        value_quality=row.value_quality,
        clock=row.clock,
    )


@meters.get(
    "/{meter_id}/intervals",
    responses={**_NOT_FOUND, 422: {"model": ErrorOut, "description": "Invalid range"}},
)
def intervals(
    meter_id: str,
    reader: Reader,
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="ISO 8601 with offset; default: `to` - 24 h")
    ] = None,
    end: Annotated[
        AwareDatetime | None, Query(alias="to", description="ISO 8601 with offset; default: now")
    ] = None,
) -> IntervalsOut:
    end = end or datetime.now(UTC)
    start = start or end - DEFAULT_RANGE
    if start >= end:
        raise InvalidRange(f"'from' ({start.isoformat()}) must be before 'to' ({end.isoformat()})")
    if end - start > MAX_RANGE:
        raise InvalidRange(f"the range is longer than {MAX_RANGE.days} days; ask in pieces")
    if reader.meter(meter_id) is None:
        raise UnknownMeter(meter_id)
    return IntervalsOut(
        meter=meter_id,
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        intervals=[_interval_out(row) for row in reader.intervals(meter_id, _to_ms(start), _to_ms(end))],
    )


def _interval_out(row: IntervalRow) -> IntervalOut:
    imported, exported = row.energy_import_kwh, row.energy_export_kwh
    return IntervalOut(
        start=_to_datetime(row.start_ms),
        end=_to_datetime(row.start_ms + INTERVAL_MS),
        energy_import_kwh=imported,
        energy_export_kwh=exported,
        mean_kw=None if imported is None else (imported - (exported or 0.0)) / HOURS_PER_INTERVAL,
        max_kw=row.max_kw,
        samples=row.samples,
    )


def _optional_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else _to_datetime(ms)


Limit = Annotated[int, Query(ge=1, le=10_000, description="At most this many")]


accounting = APIRouter(prefix="/api/v1", tags=["accounting"])


@accounting.get("/quarantine")
def list_quarantine(
    reader: Reader,
    meter: Annotated[str | None, Query(description="Only this meter")] = None,
    limit: Limit = 100,
) -> list[QuarantinedOut]:
    """Readings stamped by an unsynchronised clock, kept out of readings and intervals, oldest first."""
    return [
        QuarantinedOut(
            id=row.id,
            meter=row.meter_id,
            site=row.site,
            gateway=row.gateway,
            ts=_to_datetime(row.ts),
            boot_id=row.boot_id,
            mono_ms=row.mono_ms,
            values=row.reading.values,
            reason=row.reason,
            detail=row.reason.detail,
            received_at=_to_datetime(row.received_at),
        )
        for row in reader.quarantine(meter, limit)
    ]


@accounting.get("/gateways")
def list_gateways(reader: Reader) -> list[GatewayOut]:
    """Every gateway's last status, by site and gateway."""
    return [
        GatewayOut(
            site=row.site,
            gateway=row.gateway,
            state=GatewayState(row.state),
            ts=_to_datetime(row.ts),
            agent_version=row.agent_version,
            meters=row.meters,
            received_at=_to_datetime(row.received_at),
        )
        for row in reader.gateways()
    ]


@accounting.get("/gateways/events")
def list_gateway_events(reader: Reader, limit: Limit = 100) -> list[GatewayEventOut]:
    """What gateways reported happening (spool evictions, corruption, full disk), newest first."""
    return [
        GatewayEventOut(
            site=row.site,
            gateway=row.gateway,
            ts=_to_datetime(row.ts),
            kind=row.kind,
            readings=row.readings,
            oldest_ts=_optional_datetime(row.oldest_ts),
            newest_ts=_optional_datetime(row.newest_ts),
            detail=row.detail,
            received_at=_to_datetime(row.received_at),
        )
        for row in reader.gateway_events(limit)
    ]


@accounting.get("/gateways/gaps")
def list_seq_gaps(reader: Reader) -> list[SeqGapOut]:
    """Batches a gateway numbered but never delivered (its spool evicted them), per spool."""
    return [
        SeqGapOut(
            site=row.site,
            gateway=row.gateway,
            spool_id=row.spool_id,
            first_seq=row.first_seq,
            last_seq=row.last_seq,
            batches=row.last_seq - row.first_seq + 1,
            detected_at=_to_datetime(row.detected_at),
        )
        for row in reader.seq_gaps()
    ]


operations = APIRouter(tags=["operations"])


@operations.get("/healthz", responses={503: {"model": HealthOut, "description": "The ledger is unreadable"}})
def healthz(context: Context, response: Response) -> HealthOut:
    try:
        with LedgerReader(context.ledger_path) as reader:
            ledger_ok = reader.ping()
    except sqlite3.Error:
        ledger_ok = False
    mqtt_connected = context.mqtt_connected()
    if not ledger_ok:
        response.status_code = 503
    status: Literal["ok", "degraded", "failing"] = (
        "failing" if not ledger_ok else "ok" if mqtt_connected else "degraded"
    )
    return HealthOut(status=status, mqtt_connected=mqtt_connected, ledger_ok=ledger_ok)


@operations.get("/metrics", response_class=Response)
def prometheus_metrics(context: Context) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(ErrorOut(detail=str(exc)).model_dump(), status_code=exc.status_code)


def create_app(
    *,
    ledger_path: Path,
    metrics: CollectorMetrics,
    mqtt_connected: Callable[[], bool],
    sites: Sites | None = None,
) -> FastAPI:
    """The API over the ledger at `ledger_path` (which must exist: the :class:`Ledger` creates it)."""
    app = FastAPI(title="kilowatch collector", version=__version__)
    app.state.context = ApiContext(
        ledger_path=ledger_path, metrics=metrics, mqtt_connected=mqtt_connected, sites=sites
    )
    app.include_router(meters)
    app.include_router(accounting)
    app.include_router(operations)
    # These import this module: only once it is loaded.
    from collector.api_alerts import router as alerts_router
    from collector.api_reports import router as reports_router

    app.include_router(alerts_router)
    app.include_router(reports_router)
    app.add_exception_handler(ApiError, _api_error)
    return app
