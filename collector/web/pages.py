"""The pages: sites overview, a site's day, a meter, alerts and one alert, each rendered on the server from
the answers of the API's own route functions (the same rules, the same figures as ``/api/v1``).

Server-rendered rather than a front end of its own: one Python code path (tested by the API's tests as
well), pages that work without JavaScript on a phone on a weak link, and nothing to build. JavaScript only
draws the charts (uPlot, vendored under ``static/vendor``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from collector.access import Principal
from collector.alerts import AlertOut
from collector.api import alerts as alerts_api
from collector.api import meters as meters_api
from collector.api import reports as reports_api
from collector.api import session as session_api
from collector.api.deps import AccessDep, Alerts, Context, Now, Reader, require_site
from collector.api.problems import ApiError, NotFound, Unauthorized
from collector.api.session import LoginIn
from collector.detectors.findings import Detector
from collector.reports import SiteDay
from collector.store import AlertStatus
from collector.web import auth, figures, i18n
from collector.web.auth import SessionUser, safe_next
from collector.web.i18n import LANG_COOKIE, Lang
from kilowatch.timebase import (
    DAY_MS,
    SLOT_HOURS,
    SLOT_MS,
    SLOTS_PER_DAY,
    VIETNAM_TZ,
    day_number,
    day_start_ms,
    to_ms,
    utc_datetime,
)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["local"] = i18n.local_time

RANGES = (1, 7, 31)
"""The meter page's ranges, in days."""
MAX_CHART_SAMPLES_DAYS = 1
"""Raw power readings are drawn up to this range; beyond it, the 15-minute mean and maximum only."""


def _render(
    request: Request, lang: Lang, viewer: Principal | None, template: str, status: int = 200, **values: Any
) -> HTMLResponse:
    """`template` in `lang`; a ``?lang=`` that chose it is remembered in a cookie."""
    other = Lang.EN if lang is Lang.VI else Lang.VI
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": i18n.catalogue(lang),
            "lang": lang,
            "viewer": viewer,
            "num": partial(i18n.number, lang=lang),
            "pct": partial(i18n.percent, lang=lang),
            "switch": f"{request.url.path}?{urlencode({**request.query_params, 'lang': other.value})}",
            **values,
        },
        status_code=status,
    )
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True)
    return response


@dataclass(frozen=True)
class Page:
    """A request of a logged-in user, in the language chosen."""

    request: Request
    lang: Lang
    viewer: Principal

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return _render(self.request, self.lang, self.viewer, template, status, **values)


def _lang(request: Request, asked: str | None) -> Lang:
    return i18n.choose(asked, request.cookies.get(LANG_COOKIE))


def _page(request: Request, viewer: SessionUser, lang: Annotated[str | None, Query()] = None) -> Page:
    return Page(request, _lang(request, lang), viewer)


Current = Annotated[Page, Depends(_page)]
Day = Annotated[date | None, Query(description="Vietnam calendar day (default: today)")]


class _PageRoute(APIRoute):
    """A page's refusal (an unknown or forbidden site, meter or alert; a query that does not validate) as a
    page saying why, with the API's status and message, rather than the API's problem details."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiError, RequestValidationError) as exc:
                status = exc.status if isinstance(exc, ApiError) else HTTPStatus.UNPROCESSABLE_ENTITY
                lang = _lang(request, request.query_params.get("lang"))
                detail = str(exc) if isinstance(exc, ApiError) else i18n.catalogue(lang)["invalid_query"]
                return _render(request, lang, None, "error.html", status, status_code=status, detail=detail)

        return page


router = APIRouter(include_in_schema=False, route_class=_PageRoute)


def install(app: FastAPI) -> None:
    """The pages, their static files (stylesheet, scripts, chart library) and their login on `app`."""
    auth.install(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)


def _today(now: datetime) -> date:
    return now.astimezone(VIETNAM_TZ).date()


def _site_ids(context: Context, reader: Reader) -> list[str]:
    """The sites detection judges, or, without detection, the sites meters have reported from."""
    if context.sites is not None:
        return sorted(context.sites.sites)
    return sorted({m.site for m in reader.meters()})


def _report(context: Context, now: Now, principal: Principal, site: str, day: date) -> SiteDay | None:
    if context.sites is None or site not in context.sites.sites:
        return None
    return reports_api.daily_report(site, context, now, principal, day)


def _open_alerts(store: Alerts, principal: Principal, site: str) -> list[AlertOut]:
    return alerts_api.list_alerts(store, principal, status=AlertStatus.OPEN, site=site, limit=1000)


@router.get("/", response_class=HTMLResponse)
def overview(
    page: Current, context: Context, reader: Reader, store: Alerts, now: Now, day: Day = None
) -> Response:
    day = day or _today(now)
    rows = []
    for site in _site_ids(context, reader):
        if not page.viewer.sees(site):
            continue
        report = _report(context, now, page.viewer, site, day)
        rows.append(
            {
                "site": site,
                "totals": None if report is None else figures.site_totals(report),
                "open_alerts": len(_open_alerts(store, page.viewer, site)),
            }
        )
    return page.render("overview.html", day=day, sites=rows, detection=context.sites is not None)


def _load(reader: Reader, meters: list[str], day: date) -> dict[int, float]:
    """`meters`' summed mean kW per 15-minute slot of `day` (slots none of them has are left out)."""
    start = day_start_ms(day_number(day))
    end = start + DAY_MS
    load: dict[int, float] = {}
    for meter in meters:
        for row in reader.intervals(meter, start, end):
            if row.energy_import_kwh is not None:
                slot = (row.start_ms - start) // SLOT_MS
                load[slot] = load.get(slot, 0.0) + row.energy_import_kwh / SLOT_HOURS
    return load


@router.get("/sites/{site}", response_class=HTMLResponse)
def site_page(
    site: str, page: Current, context: Context, reader: Reader, store: Alerts, now: Now, day: Day = None
) -> Response:
    day = day or _today(now)
    require_site(page.viewer, site)
    report = _report(context, now, page.viewer, site, day)
    if report is None or context.sites is None:
        raise NotFound(f"unknown site {site!r}")
    calendar = context.sites.sites[site].calendar
    supply = [m.meter for m in figures.supply(report)]
    loads = figures.typical_days(
        day, lambda d: bool(calendar.occupied_slots(day_number(d))), lambda d: _load(reader, supply, d)
    )
    today = _load(reader, supply, day)
    start_ms = day_start_ms(day_number(day))
    end_ms = start_ms + DAY_MS
    chart = {
        "start": start_ms / 1000,
        "step": SLOT_MS / 1000,
        "today": [today.get(s) for s in range(SLOTS_PER_DAY)],
        "typical": figures.slot_mean(list(loads.values())),
    }
    return page.render(
        "site.html",
        site=site,
        day=day,
        report=report,
        totals=figures.site_totals(report),
        supply=supply,
        typical_days=list(loads),
        chart=chart,
        alerts=alerts_api.list_alerts(
            store, page.viewer, site=site, start=utc_datetime(start_ms), end=utc_datetime(end_ms), limit=1000
        ),
        previous=day - timedelta(days=1),
        following=day + timedelta(days=1),
    )


@router.get("/meters/{meter}", response_class=HTMLResponse)
def meter_page(
    meter: str,
    page: Current,
    reader: Reader,
    now: Now,
    days: Annotated[int, Query(ge=1, le=31)] = 1,
) -> Response:
    row = reader.meter(meter)
    if row is None:
        raise meters_api.UnknownMeter(meter)
    require_site(page.viewer, row.site)
    # The range ends with the meter's newest reading (the end of its 15-minute interval), so that a meter
    # gone quiet, or history loaded after the fact, still shows its data.
    end = utc_datetime((row.last_seen // SLOT_MS + 1) * SLOT_MS)
    start = end - timedelta(days=days)
    intervals = meters_api.intervals(meter, reader, page.viewer, now, start, end)
    latest = meters_api.latest(meter, reader, page.viewer)
    samples = reader.power_samples(meter, to_ms(start), to_ms(end)) if days <= MAX_CHART_SAMPLES_DAYS else []
    chart = {
        "intervals": [
            [i.start.timestamp() + SLOT_MS / 2000 for i in intervals.intervals],
            [i.mean_kw for i in intervals.intervals],
            [i.max_kw for i in intervals.intervals],
        ],
        "samples": [[s.ts / 1000 for s in samples], [s.kw for s in samples]],
    }
    with_data = sum(1 for i in intervals.intervals if i.energy_import_kwh is not None)
    return page.render(
        "meter.html",
        meter=row,
        days=days,
        ranges=RANGES,
        latest=latest,
        intervals=list(reversed(intervals.intervals)),
        window=intervals,
        with_data=with_data,
        chart=chart,
    )


@router.get("/alerts", response_class=HTMLResponse)
def alert_list(
    page: Current,
    context: Context,
    reader: Reader,
    store: Alerts,
    status: Annotated[AlertStatus | None, Query()] = None,
    detector: Annotated[Detector | None, Query()] = None,
    site: Annotated[str | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    limit = 50
    found = alerts_api.list_alerts(
        store, page.viewer, status=status, detector=detector, site=site, before=before, limit=limit
    )
    filters = {"status": status, "detector": detector, "site": site}
    more = None
    if len(found) == limit:
        more = urlencode({**{k: v for k, v in filters.items() if v}, "before": found[-1].id})
    return page.render(
        "alerts.html",
        alerts=found,
        filters=filters,
        statuses=list(AlertStatus),
        detectors=list(Detector),
        sites=[s for s in _site_ids(context, reader) if page.viewer.sees(s)],
        more=more,
    )


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(alert_id: int, page: Current, store: Alerts, now: Now) -> Response:
    alert = alerts_api.get_alert(alert_id, store, page.viewer)
    default_until = (now + timedelta(hours=4)).astimezone(VIETNAM_TZ).strftime("%Y-%m-%dT%H:%M")
    return page.render("alert.html", alert=alert, default_until=default_until)


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request,
    lang: Annotated[str | None, Query()] = None,
    next_url: Annotated[str | None, Query(alias="next")] = None,
) -> Response:
    return _render(request, _lang(request, lang), None, "login.html", next=safe_next(next_url), failed=False)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    access: AccessDep,
    context: Context,
    now: Now,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    next_url: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    """The API's login (the same check, the same cookies) from the login form, then on to the page asked for."""
    going = safe_next(next_url)
    response = RedirectResponse(going, status_code=303)
    try:
        session_api.login(LoginIn(username=username, password=password), access, context, now, response)
    except (Unauthorized, ValidationError):
        return _render(request, _lang(request, None), None, "login.html", 401, next=going, failed=True)
    return response
