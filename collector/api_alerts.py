"""The alerts API: list and filter alerts, acknowledge one, silence one.

Each request opens the alert store on a connection of its own (endpoints are plain ``def``, run in
FastAPI's thread pool), like the rest of the API. Lifecycle errors map to HTTP in one table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AwareDatetime, BaseModel, Field

from collector.alerts import (
    AlertConflict,
    AlertError,
    AlertOut,
    AlertStore,
    InvalidSilence,
    UnknownAlert,
    to_ms,
)
from collector.api import Context, ErrorOut
from collector.detectors.findings import Detector
from collector.store import AlertQuery, AlertStatus

_HTTP_STATUS: dict[type[AlertError], int] = {UnknownAlert: 404, AlertConflict: 409, InvalidSilence: 422}


@contextmanager
def _as_http() -> Iterator[None]:
    try:
        yield
    except AlertError as exc:
        raise HTTPException(_HTTP_STATUS[type(exc)], str(exc)) from exc


def _store(context: Context) -> Iterator[AlertStore]:
    with AlertStore(context.ledger_path) as store:
        yield store


Store = Annotated[AlertStore, Depends(_store)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "Unknown alert"},
    409: {"model": ErrorOut, "description": "The alert is resolved, or already acknowledged"},
}


class SilenceIn(BaseModel):
    until: AwareDatetime = Field(description="Notifications of the alert are held back until then")
    reason: str = Field(min_length=1, max_length=500, description="Why, for the people who see the alert")


router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.get("", responses={422: {"model": ErrorOut, "description": "Invalid range"}})
def list_alerts(
    store: Store,
    status: Annotated[AlertStatus | None, Query(description="Only alerts in this state")] = None,
    detector: Annotated[Detector | None, Query(description="Only this detector's alerts")] = None,
    site: Annotated[str | None, Query(description="Only this site")] = None,
    meter: Annotated[str | None, Query(description="Only this meter")] = None,
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="Alerts whose condition lasted past this")
    ] = None,
    end: Annotated[
        AwareDatetime | None, Query(alias="to", description="Alerts whose condition began before this")
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, description="Page on: alerts with a smaller id than this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 100,
) -> list[AlertOut]:
    """Alerts, newest first; pass the last id seen as `before` for the next page."""
    if start is not None and end is not None and start >= end:
        raise HTTPException(422, f"'from' ({start.isoformat()}) must be before 'to' ({end.isoformat()})")
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
def get_alert(alert_id: int, store: Store) -> AlertOut:
    with _as_http():
        return AlertOut.of(store.get(alert_id))


@router.post("/{alert_id}/ack", responses=_ERRORS)
def acknowledge(alert_id: int, store: Store) -> AlertOut:
    """Someone is on it: the alert goes from open to acknowledged (it still resolves by itself)."""
    with _as_http():
        return AlertOut.of(store.acknowledge(alert_id))


@router.post(
    "/{alert_id}/silence",
    responses={**_ERRORS, 422: {"model": ErrorOut, "description": "'until' is not in the future"}},
)
def silence(alert_id: int, body: SilenceIn, store: Store) -> AlertOut:
    """Hold back the alert's notifications until `until`; what is due then is sent then."""
    with _as_http():
        return AlertOut.of(store.silence(alert_id, until_ms=to_ms(body.until), reason=body.reason))
