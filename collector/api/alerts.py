"""Alerts: list and filter them, acknowledge one, silence one.

The alert store's refusals become the API's errors in one table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from collector.access import Principal
from collector.alerts import AlertConflict, AlertError, AlertOut, AlertStore, InvalidSilence, UnknownAlert
from collector.api.deps import Alerts, Manager, Viewer, require_site, viewer
from collector.api.paging import DEFAULT_LIMIT, LINK_HEADER, MAX_LIMIT, link_next
from collector.api.params import RowId, Time
from collector.api.problems import ApiError, Conflict, NotFound, Unprocessable, problem, require_order
from collector.detectors.findings import Detector
from collector.store import Alert, AlertQuery, AlertStatus
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
    403: problem("An alert of a site the caller may not see, or a viewer acting on it"),
    404: problem("Unknown alert"),
    409: problem("The alert is resolved, or already acknowledged"),
}


class SilenceIn(BaseModel):
    until: Time = Field(description="Notifications of the alert are held back until then")
    reason: str = Field(min_length=1, max_length=500, description="Why, for the people who see the alert")


router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], dependencies=[Depends(viewer)])


class AlertFilters(BaseModel):
    """The alerts route's query parameters."""

    status: AlertStatus | None = Field(None, description="Only alerts in this state")
    detector: Detector | None = Field(None, description="Only this detector's alerts")
    site: str | None = Field(None, description="Only this site")
    meter: str | None = Field(None, description="Only this meter")
    start: Time | None = Field(None, alias="from", description="Alerts whose condition lasted past this")
    end: Time | None = Field(None, alias="to", description="Alerts whose condition began before this")
    before: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        description='Page on: alerts with a smaller id than this (the `Link: rel="next"` has it)',
    )
    limit: int = Field(
        DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"At most this many (at most {MAX_LIMIT})"
    )


@router.get("", responses={200: {"headers": LINK_HEADER}, 422: problem("Invalid range")})
def alerts(
    store: Alerts,
    principal: Viewer,
    filters: Annotated[AlertFilters, Query()],
    request: Request,
    response: Response,
) -> list[AlertOut]:
    """Alerts, newest first; the next page is the last id seen as `before` (the `Link` header has it)."""
    found = list_alerts(store, principal, **filters.model_dump())
    if len(found) == filters.limit:
        link_next(request, response, before=found[-1].id)
    return found


def list_alerts(
    store: AlertStore,
    principal: Principal,
    *,
    status: AlertStatus | None = None,
    detector: Detector | None = None,
    site: str | None = None,
    meter: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[AlertOut]:
    """The principal's alerts that pass the filters, newest first."""
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
    return [AlertOut.of(alert) for alert in _visible(store, query, principal)]


def _visible(store: AlertStore, query: AlertQuery, principal: Principal) -> list[Alert]:
    """The alerts of `query` on the principal's sites: one query per site, merged newest first (ids
    grow with time, so the `limit` newest of each site hold the `limit` newest of all)."""
    if principal.sites is None:
        return store.alerts(query)
    sites = principal.sites if query.site is None else principal.sites & {query.site}
    found = [alert for site in sites for alert in store.alerts(dataclasses.replace(query, site=site))]
    return sorted(found, key=lambda alert: alert.id, reverse=True)[: query.limit]


def _get(store: AlertStore, alert_id: int, principal: Principal) -> Alert:
    """The alert, if it exists (404) and the principal may see its site (403)."""
    with _refusals():
        alert = store.get(alert_id)
    require_site(principal, alert.site)
    return alert


@router.get("/{alert_id}", responses=_ERRORS)
def get_alert(alert_id: RowId, store: Alerts, principal: Viewer) -> AlertOut:
    return AlertOut.of(_get(store, alert_id, principal))


@router.post("/{alert_id}/ack", responses=_ERRORS)
def acknowledge(alert_id: RowId, store: Alerts, principal: Manager) -> AlertOut:
    """Someone is on it: the alert goes from open to acknowledged (it still resolves by itself)."""
    _get(store, alert_id, principal)
    with _refusals():
        return AlertOut.of(store.acknowledge(alert_id))


@router.post("/{alert_id}/silence", responses={**_ERRORS, 422: problem("'until' is not in the future")})
def silence(alert_id: RowId, body: SilenceIn, store: Alerts, principal: Manager) -> AlertOut:
    """Hold back the alert's notifications until `until`; what is due then is sent then."""
    _get(store, alert_id, principal)
    with _refusals():
        return AlertOut.of(store.silence(alert_id, until_ms=to_ms(body.until), reason=body.reason))
