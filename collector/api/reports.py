"""Reports: a site's day in figures (:mod:`collector.reports`), for the sites detection judges."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from collector.api.deps import Context, Now, Viewer, require_site, viewer
from collector.api.params import Day
from collector.api.problems import NotFound, problem
from collector.reports import SiteDay, ledger_reporter
from kilowatch.timebase import VIETNAM_TZ

router = APIRouter(prefix="/api/v1/sites", tags=["reports"], dependencies=[Depends(viewer)])


@router.get(
    "/{site}/report",
    responses={404: problem("Not a site of the detection settings"), 403: problem("Not your site")},
)
def daily_report(
    site: str,
    context: Context,
    now: Now,
    principal: Viewer,
    day: Annotated[Day | None, Query(description="Vietnam calendar day (default: yesterday)")] = None,
) -> SiteDay:
    """Per configured meter of `site` on `day`: energy and cost by time-of-use band, base and near-peak
    load, after-hours and peak-band shares, machines' idle share per shift, and what the day's alerts
    wasted."""
    require_site(principal, site)
    if context.sites is None:
        raise NotFound("no sites: detection is not configured (detection.sites in collector.yaml)")
    report = ledger_reporter(context.ledger, context.sites)(
        site, day or now.astimezone(VIETNAM_TZ).date() - timedelta(days=1)
    )
    if report is None:
        raise NotFound(f"unknown site {site!r}")
    return report
