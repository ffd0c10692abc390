"""The daily digest of a site: the alerts still open and what the day's alerts wasted, in both languages."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from collector.alerts import AlertOut, AlertStore, vnd_en, vnd_vi
from collector.reports import Reporter, SiteDay, summary_lines
from collector.store import AlertQuery, AlertStatus
from kilowatch.timebase import DAY_MS, VIETNAM_TZ, day_number, day_start_ms, to_ms, utc_datetime

MAX_ALERTS = 1000
"""Alerts a digest lists at most, per list."""


class Digest(BaseModel):
    site: str
    day: date = Field(description="The calendar day (Vietnam time) the digest covers")
    open_alerts: list[AlertOut] = Field(description="Alerts not resolved when the digest was made")
    day_alerts: list[AlertOut] = Field(description="Alerts whose condition began on `day`")
    wasted_kwh: float = Field(description="What the day's alerts wasted")
    cost_vnd: float
    report: SiteDay | None = Field(None, description="The site's day in figures, when detection judges it")
    message_vi: str
    message_en: str


class DigestNotice(BaseModel):
    """The webhook's JSON body for a digest."""

    kind: Literal["digest"] = "digest"
    digest: Digest


def digest(store: AlertStore, site: str, day: date, report: SiteDay | None = None) -> Digest:
    """The digest of `site` for `day`; the day's waste counts the alerts that began on it; with the
    site's `report`, a line per meter."""
    start = day_start_ms(day_number(day))
    end = start + DAY_MS
    overlapping = store.alerts(AlertQuery(site=site, start_ms=start, end_ms=end, limit=MAX_ALERTS))
    began = [AlertOut.of(a) for a in overlapping if a.start_ms >= start]
    still_open = [
        AlertOut.of(a)
        for status in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)
        for a in store.alerts(AlertQuery(site=site, status=status, limit=MAX_ALERTS))
    ]
    kwh = sum(a.wasted_kwh for a in began)
    vnd = sum(a.cost_vnd for a in began)
    vi = [
        f"Kilowatch - tóm tắt ngày {day:%d/%m/%Y}, {site}: {len(began)} cảnh báo mới, "
        f"lãng phí {kwh:.1f} kWh, khoảng {vnd_vi(vnd)}. Đang mở: {len(still_open)} cảnh báo.",
        *(f"- {a.meter}: {a.message_vi}" for a in still_open),
    ]
    en = [
        f"Kilowatch - digest for {day:%Y-%m-%d}, {site}: {len(began)} new alerts, "
        f"{kwh:.1f} kWh wasted, about {vnd_en(vnd)}. Open: {len(still_open)} alerts.",
        *(f"- {a.meter}: {a.message_en}" for a in still_open),
    ]
    if report is not None:
        meters_vi, meters_en = summary_lines(report)
        vi += ["Số liệu trong ngày:", *meters_vi]
        en += ["The day in figures:", *meters_en]
    return Digest(
        site=site,
        day=day,
        open_alerts=still_open,
        day_alerts=began,
        wasted_kwh=kwh,
        cost_vnd=vnd,
        report=report,
        message_vi="\n".join(vi),
        message_en="\n".join(en),
    )


def queue_digests(store: AlertStore, day: date, reporter: Reporter | None = None) -> int | None:
    """Queue the digest of `day` of every site with something to say (with its report from `reporter`);
    how many, or None when that day's were queued before (by this process or one before a restart)."""
    sites = store.sites_for_digest(day)
    bodies = [
        DigestNotice(
            digest=digest(store, site, day, reporter(site, day) if reporter else None)
        ).model_dump_json()
        for site in sites
    ]
    return len(sites) if store.enqueue_digests(day, bodies) else None


def next_digest_ms(now_ms: int, at: time) -> int:
    """The first moment after `now_ms` at which the local (Vietnam) clock reads `at`."""
    local = utc_datetime(now_ms).astimezone(VIETNAM_TZ)
    candidate = datetime.combine(local.date(), at, tzinfo=VIETNAM_TZ)
    if candidate <= local:
        candidate += timedelta(days=1)
    return to_ms(candidate)


def last_digest_ms(now_ms: int, at: time) -> int:
    """The last moment at or before `now_ms` at which the local (Vietnam) clock read `at`."""
    return next_digest_ms(now_ms, at) - 86_400_000


def local_day_before(ms: int) -> date:
    """The Vietnamese calendar day before the one `ms` falls on: the day a digest sent at `ms` covers."""
    return utc_datetime(ms).astimezone(VIETNAM_TZ).date() - timedelta(days=1)
