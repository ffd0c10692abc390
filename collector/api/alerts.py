"""Alerts: list and filter them, acknowledge one, silence one.

The alert store's refusals become the API's errors in one table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from collector.alerts import (
    AlertConflict,
    AlertError,
    AlertOut,
    InvalidSilence,
    UnknownAlert,
)
from collector.api.deps import Alerts
from collector.api.params import RowId, Time
from collector.api.problems import ApiError, Conflict, NotFound, Unprocessable, problem, require_order
from collector.detectors.findings import Detector
from collector.store import AlertQuery, AlertStatus
from kilowatch.mqtt_contract import INT64_MAX
from kilowatch.timebase import to_ms

_REFUSALS: dict[type[AlertError], type[ApiError]] = {
    UnknownAlert: NotFound,
    AlertConflict: Conflict,
    InvalidSilence: Unprocessable,
}


@contextmanager
def _refusals() -> Iterator[None]:
    """The store's refusal as the API's error, with the same message."""
    try:
        yield
    except AlertError as exc:
        raise _REFUSALS[type(exc)](str(exc)) from exc


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: problem("Unknown alert"),
    409: problem("The alert is resolved, or already acknowledged"),
}


class SilenceIn(BaseModel):
    until: Time = Field(description="Notifications of the alert are held back until then")
    reason: str = Field(min_length=1, max_length=500, description="Why, for the people who see the alert")


router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.get("", responses={422: problem("Invalid range")})
def list_alerts(
    store: Alerts,
    status: Annotated[AlertStatus | None, Query(description="Only alerts in this state")] = None,
    detector: Annotated[Detector | None, Query(description="Only this detector's alerts")] = None,
    site: Annotated[str | None, Query(description="Only this site")] = None,
    meter: Annotated[str | None, Query(description="Only this meter")] = None,
    start: Annotated[
        Time | None, Query(alias="from", description="Alerts whose condition lasted past this")
    ] = None,
    end: Annotated[
        Time | None, Query(alias="to", description="Alerts whose condition began before this")
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="Page on: alerts with a smaller id than this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 100,
) -> list[AlertOut]:
    """Alerts, newest first; pass the last id seen as `before` for the next page."""
    if start is not None and end is not None:
        require_order(start, end)
    query = AlertQuery(
        status=status,
        detector=detector,
        site=site,
        meter=meter,
        start_ms=None if start is None else to_ms(start),
        end_ms=None if end is None else to_ms(end),
        before_id=before,
        limit=limit,
    )
    return [AlertOut.of(alert) for alert in store.alerts(query)]


@router.get("/{alert_id}", responses=_ERRORS)
def get_alert(alert_id: RowId, store: Alerts) -> AlertOut:
    with _refusals():
        return AlertOut.of(store.get(alert_id))


@router.post("/{alert_id}/ack", responses=_ERRORS)
def acknowledge(alert_id: RowId, store: Alerts) -> AlertOut:
    """Someone is on it: the alert goes from open to acknowledged (it still resolves by itself)."""
    with _refusals():
        return AlertOut.of(store.acknowledge(alert_id))


@router.post("/{alert_id}/silence", responses={**_ERRORS, 422: problem("'until' is not in the future")})
def silence(alert_id: RowId, body: SilenceIn, store: Alerts) -> AlertOut:
    """Hold back the alert's notifications until `until`; what is due then is sent then."""
    with _refusals():
        return AlertOut.of(store.silence(alert_id, until_ms=to_ms(body.until), reason=body.reason))
