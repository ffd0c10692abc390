"""The 2026 time-of-use calendar's effective date is a site's setting, with a warning until confirmed."""

from __future__ import annotations

import logging
from datetime import date

import pytest

from collector.api.app import create_app
from collector.calendars import SiteCalendar
from collector.config import DetectionSettings
from collector.detect_live import LiveDetection
from collector.detectors.config import SiteConfig, Sites
from collector.metrics import CollectorMetrics
from collector.reports import SiteDay, summary_lines
from collector.store import Ledger
from kilowatch.calendars import Band
from kilowatch.timebase import day_number
from tests.api_support import api_client
from tests.ledger_support import LedgerAt


def evening_band(calendar: SiteCalendar, d: date) -> Band:
    """The band at 21:00, peak under the 2026 bands (17:30-22:30), normal under 2014's (17:00-20:00)."""
    return calendar.bands(day_number(d))[21 * 4]


def test_the_2026_bands_start_on_the_date_the_site_confirmed() -> None:
    assumed = SiteCalendar()
    assert evening_band(assumed, date(2026, 4, 30)) is Band.NORMAL
    assert evening_band(assumed, date(2026, 5, 4)) is Band.PEAK
    assert "2026-05-01" in (assumed.tou_unconfirmed or "")
    confirmed = SiteCalendar(tou_2026_from=date(2026, 6, 1))
    assert evening_band(confirmed, date(2026, 5, 4)) is Band.NORMAL
    assert evening_band(confirmed, date(2026, 6, 1)) is Band.PEAK
    assert confirmed.tou_unconfirmed is None
    assert SiteCalendar(tou=("circular-16-2014",)).tou_unconfirmed is None  # not on the 2026 bands at all


def test_an_unconfirmed_date_is_logged_and_in_the_daily_report(
    ledger_at: LedgerAt, caplog: pytest.LogCaptureFixture
) -> None:
    sites = Sites(
        sites={"a": SiteConfig(), "b": SiteConfig(calendar=SiteCalendar(tou_2026_from=date(2026, 5, 1)))}
    )
    with caplog.at_level(logging.WARNING):
        LiveDetection(ledger_at("kilowatch"), sites, DetectionSettings()).close()
    assert "1 sites (a) have not confirmed calendar.tou_2026_from" in caplog.text
    report = SiteDay(
        site="a", day=date(2026, 5, 4), meters=[], warnings=[SiteCalendar().tou_unconfirmed or ""]
    )
    vi, en = summary_lines(report)
    assert en == [f"- Settings warning: {report.warnings[0]}"]
    assert vi[0].startswith("- Cảnh báo cấu hình:")


async def test_healthz_names_the_sites_that_have_not_confirmed_the_date(ledger_at: LedgerAt) -> None:
    Ledger(ledger_at("kilowatch")).close()
    sites = Sites(
        sites={"a": SiteConfig(), "b": SiteConfig(calendar=SiteCalendar(tou_2026_from=date(2026, 5, 1)))}
    )
    app = create_app(
        ledger=ledger_at("kilowatch"),
        metrics=CollectorMetrics(),
        mqtt_connected=lambda: True,
        sites=sites,
    )
    async with api_client(app) as client:
        health = (await client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["warnings"] == [f"a: {SiteCalendar().tou_unconfirmed}"]
