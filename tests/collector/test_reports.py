"""A site's daily report from a real ledger file (readings ingested, intervals built by the ledger, alerts
stored), through the real app's API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import httpx
import pytest

from collector.alerts import AlertStore
from collector.api.app import create_app
from collector.calendars import SiteCalendar
from collector.detectors.config import MeterConfig, Role, SiteConfig, Sites
from collector.metrics import CollectorMetrics
from collector.notifiers.digest import digest
from collector.reports import ledger_reporter
from collector.store import Ledger, Location
from kilowatch.timebase import VIETNAM_TZ
from tests.alert_support import finding
from tests.api_support import api_client
from tests.collector_support import batch, reading
from tests.ledger_support import LedgerAt

DAY = datetime(2025, 6, 3, tzinfo=VIETNAM_TZ)  # a Tuesday, Circular 16's bands: peak 09:30-11:30, 17:00-20:00


def local_ms(hours: float, day: datetime = DAY) -> int:
    return int((day + timedelta(hours=hours)).timestamp() * 1000)


def office(h: float) -> float:
    """10 kW 07:30-17:00 (lunch included), 1 kW otherwise."""
    return 10.0 if 7.5 <= h < 17 else 1.0


def press(h: float) -> float:
    """Off outside the shifts; loaded (8 kW) 07:30-08:30 and 13:00-17:00, idling (1.5 kW) 08:30-11:30."""
    if 7.5 <= h < 8.5 or 13 <= h < 17:
        return 8.0
    return 1.5 if 8.5 <= h < 11.5 else 0.0


def ingest(ledger: Ledger, meter: str, kw: Callable[[float], float]) -> None:
    """A reading a minute from 23:00 the day before to 01:00 the day after, its counter integrating
    the power of the minutes before it."""
    energy = 1000.0
    for seq, minute in enumerate(range(-60, 25 * 60 + 1)):
        h = minute / 60
        power = kw(h % 24)
        ledger.ingest(
            batch(reading(local_ms(h), meter=meter, imp=energy, power_w=power * 1000), site="s", seq=seq),
            received_at=local_ms(h),
        )
        energy += power / 60


SITES = Sites(
    sites={
        "s": SiteConfig(
            meters={
                "office": MeterConfig(role=Role.SUB_METER, rated_kw=12),
                "press": MeterConfig(role=Role.MACHINE, rated_kw=10),
            }
        )
    }
)


@pytest.fixture
def ledger_path(ledger_at: LedgerAt) -> Location:
    path = ledger_at("kilowatch")
    with Ledger(path) as ledger:
        ingest(ledger, "office", office)
        ingest(ledger, "press", press)
    with AlertStore(path) as store:
        store.apply(finding(site="s", meter="office", start_ms=local_ms(19), wasted_kwh=3.0))
        store.apply(finding(site="s", meter="office", start_ms=local_ms(-2), wasted_kwh=50.0))
    return path


@pytest.fixture
async def client(ledger_path: Location) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ledger=ledger_path, metrics=CollectorMetrics(), mqtt_connected=lambda: True, sites=SITES)
    async with api_client(app, ledger_path) as client:
        yield client


async def test_daily_report_per_meter(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/sites/s/report?day=2025-06-03")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["site"] == "s"
    assert report["day"] == "2025-06-03"
    office, press = report["meters"]
    assert office["meter"] == "office"
    assert office["intervals"] == 96
    assert office["energy_kwh"] == pytest.approx(109.5)  # 9.5 h x 10 kW + 14.5 h x 1 kW
    # peak 09:30-11:30 at 10 kW and 17:00-20:00 at 1 kW; off-peak 00:00-04:00 and 22:00-24:00 at 1 kW
    assert office["band_kwh"] == pytest.approx({"peak": 23.0, "off_peak": 6.0, "normal": 80.5})
    assert office["peak_band_share"] == pytest.approx(23.0 / 109.5)
    assert office["peak_band_mean_kw"] == pytest.approx(4.6)
    assert office["base_kw"] == pytest.approx(1.0)
    assert office["near_peak_kw"] == pytest.approx(10.0)
    assert office["base_to_peak"] == pytest.approx(0.1)
    # after hours: neither occupied nor permitted (early arrival, lunch; the site declares no overtime)
    assert office["after_hours_share"] == pytest.approx(14.0 / 109.5)
    assert office["cost_vnd"] == pytest.approx(23.0 * 4587 + 80.5 * 2666 + 6.0 * 1622)
    assert (office["alerts"], office["wasted_kwh"]) == (
        1,
        3.0,
    )  # the alert begun the day before is not counted
    assert office["shifts"] == []
    assert press["energy_kwh"] == pytest.approx(8 + 4.5 + 32)
    assert [(s["start"], s["end"], s["idle_share"], s["flagged"]) for s in press["shifts"]] == [
        ("2025-06-03T07:30:00+07:00", "2025-06-03T11:30:00+07:00", pytest.approx(0.75), True),
        ("2025-06-03T13:00:00+07:00", "2025-06-03T17:00:00+07:00", 0.0, False),
    ]


async def test_a_partial_day_says_so(client: httpx.AsyncClient) -> None:
    report = (await client.get("/api/v1/sites/s/report?day=2025-06-04")).json()
    office = report["meters"][0]
    assert office["intervals"] == 4  # 00:00-01:00
    assert office["energy_kwh"] == pytest.approx(1.0)
    assert office["base_to_peak"] == pytest.approx(1.0)


async def test_unknown_site_or_no_detection(client: httpx.AsyncClient, ledger_at: LedgerAt) -> None:
    response = await client.get("/api/v1/sites/nowhere/report")
    assert (response.status_code, response.json()["detail"]) == (404, "unknown site 'nowhere'")
    app = create_app(ledger=ledger_at("kilowatch"), metrics=CollectorMetrics(), mqtt_connected=lambda: True)
    async with api_client(app, ledger_at("kilowatch")) as bare:
        response = await bare.get("/api/v1/sites/s/report")
    assert response.status_code == 404
    assert "detection is not configured" in response.json()["detail"]
    bad = await client.get("/api/v1/sites/s/report?day=2025-13-01")
    assert bad.status_code == 422


def test_the_digest_carries_the_report(ledger_path: Location) -> None:
    report = ledger_reporter(ledger_path, SITES)
    assert report("elsewhere", DAY.date()) is None
    with AlertStore(ledger_path) as store:
        day = digest(store, "s", DAY.date(), report("s", DAY.date()))
    assert day.report is not None
    assert [m.meter for m in day.report.meters] == ["office", "press"]
    assert day.message_en.splitlines()[-4:] == [
        "The day in figures:",
        "- office: 109.5 kWh, 13% after hours, base/peak 0.10, 21% in peak bands",
        "- press: 44.5 kWh, 0% after hours, base/peak 0.00, 7% in peak bands; idle 75% of the 07:30-11:30 shift",
        f"- Settings warning: {SiteCalendar().tou_unconfirmed}",  # the site has not confirmed its 2026 date
    ]
    assert day.message_vi.splitlines()[-2] == (
        "- press: 44.5 kWh, ngoài giờ 0%, tải nền/tải đỉnh 0.00, giờ cao điểm 7%; chạy không tải 75% ca 07:30-11:30"
    )
