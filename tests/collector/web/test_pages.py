"""The web app's pages in-process: the login, each page in both languages, the sites a user may see, and
the catalogues (the browser test, tests/test_web_browser.py, drives the same pages in Chromium)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.routing import APIRoute

from collector.access import Access, Role
from collector.alerts import AlertStore
from collector.api.app import create_app
from collector.detectors.config import MeterConfig, SiteConfig, Sites
from collector.detectors.config import Role as SiteRole
from collector.metrics import CollectorMetrics
from collector.store import Ledger, Location
from collector.store.access import AccessStore
from collector.web import i18n, pages
from collector.web.auth import safe_next
from tests.alert_support import finding
from tests.api_support import api_client
from tests.collector.test_reports import DAY, ingest, local_ms, office
from tests.ledger_support import LedgerAt

SITES = Sites(
    sites={
        "s": SiteConfig(meters={"office": MeterConfig(role=SiteRole.OFFICE_MAIN, rated_kw=12)}),
        "other": SiteConfig(meters={"elsewhere": MeterConfig(role=SiteRole.SUB_METER, rated_kw=5)}),
    }
)
PASSWORD = "correct horse battery"  # noqa: S105 - the test users'


@pytest.fixture
def ledger_path(ledger_at: LedgerAt) -> Location:
    path = ledger_at("kilowatch")
    with Ledger(path) as ledger:
        ingest(ledger, "office", office)
    with AlertStore(path) as store:
        store.apply(finding(site="s", meter="office", start_ms=local_ms(19), wasted_kwh=3.0))
        store.apply(finding(site="other", meter="elsewhere", start_ms=local_ms(20), wasted_kwh=1.0))
    with AccessStore(path) as access_store:
        access = Access(access_store)
        access.add_user("lan", PASSWORD, Role.MANAGER, ["s"], 0)
        access.add_user("minh", PASSWORD, Role.VIEWER, ["other"], 0)
    return path


@pytest.fixture
async def browser(ledger_path: Location) -> AsyncIterator[httpx.AsyncClient]:
    """A client without an API key, as a browser is."""
    app = create_app(ledger=ledger_path, metrics=CollectorMetrics(), mqtt_connected=lambda: True, sites=SITES)
    async with api_client(app) as client:
        yield client


async def log_in(client: httpx.AsyncClient, user: str) -> None:
    response = await client.post("/login", data={"username": user, "password": PASSWORD, "next": "/alerts"})
    assert (response.status_code, response.headers["location"]) == (303, "/alerts")


def test_the_catalogues_have_the_same_keys() -> None:
    assert i18n.catalogue(i18n.Lang.VI).keys() == i18n.catalogue(i18n.Lang.EN).keys()


def test_numbers_in_each_language() -> None:
    assert i18n.number(1234.56, 1, i18n.Lang.VI) == "1.234,6"
    assert i18n.number(1234.56, 1, i18n.Lang.EN) == "1,234.6"
    assert i18n.percent(0.125, i18n.Lang.VI) == "12,5 %"
    assert i18n.number(None, 1, i18n.Lang.EN) == i18n.MISSING


@pytest.mark.parametrize(
    ("asked", "expected"),
    [("/meters/x", "/meters/x"), ("//evil.example", "/"), ("https://evil", "/"), (None, "/")],
)
def test_only_a_path_of_this_site_follows_the_login(asked: str | None, expected: str) -> None:
    assert safe_next(asked) == expected


async def test_every_page_sends_a_visitor_without_a_session_to_the_login(browser: httpx.AsyncClient) -> None:
    """Walks the pages' routes, so that a new page without the session's check fails here."""
    paths = [
        re.sub(r"\{[^}]+\}", "1", route.path)
        for route in pages.router.routes
        if isinstance(route, APIRoute) and route.methods == {"GET"} and route.path != "/login"
    ]
    assert len(paths) >= 5
    for path in paths:
        response = await browser.get(path)
        assert (response.status_code, response.headers.get("location", "")[:13]) == (303, "/login?next=%"), (
            path
        )
    response = await browser.get("/sites/s?day=2025-06-03")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fsites%2Fs%3Fday%3D2025-06-03"
    login = await browser.get("/login")
    assert "Đăng nhập" in login.text
    wrong = await browser.post("/login", data={"username": "lan", "password": "guess"})
    assert wrong.status_code == 401
    assert "Sai tên đăng nhập" in wrong.text


async def test_every_page_in_both_languages(browser: httpx.AsyncClient) -> None:
    await log_in(browser, "lan")
    [alert] = (await browser.get("/api/v1/alerts")).json()
    assert 'id="acknowledge"' in (await browser.get(f"/alerts/{alert['id']}")).text
    day = DAY.date().isoformat()
    pages = ["/", f"/?day={day}", f"/sites/s?day={day}", "/meters/office", "/meters/office?days=7", "/alerts"]
    pages.append(f"/alerts/{alert['id']}")
    for lang, word in (("vi", "Cảnh báo"), ("en", "Alerts")):
        for page in pages:
            response = await browser.get(page, params={"lang": lang})
            assert response.status_code == 200, (page, response.text)
            assert word in response.text, page
    # The language chosen last is remembered.
    assert 'lang="en"' in (await browser.get("/alerts")).text
    site = (await browser.get(f"/sites/s?day={day}")).text
    report = (await browser.get(f"/api/v1/sites/s/report?day={day}")).json()
    energy = report["meters"][0]["energy_kwh"]
    assert f"{energy:,.1f} kWh" in site


async def test_a_user_sees_only_their_sites_and_a_viewer_has_no_buttons(browser: httpx.AsyncClient) -> None:
    await log_in(browser, "minh")
    overview = (await browser.get("/")).text
    assert 'data-site="other"' in overview
    assert 'data-site="s"' not in overview
    refused = await browser.get("/sites/s")
    assert refused.status_code == 403
    assert "Không có quyền xem" in refused.text
    assert refused.headers["content-type"].startswith("text/html")
    assert (await browser.get("/meters/office")).status_code == 403
    alerts = (await browser.get("/alerts")).text
    assert 'href="/meters/office"' not in alerts
    [alert] = (await browser.get("/api/v1/alerts")).json()
    page = (await browser.get(f"/alerts/{alert['id']}")).text
    assert "elsewhere" in page
    assert 'id="acknowledge"' not in page
    assert 'id="silence"' not in page


async def test_a_refusal_is_a_page_in_the_visitors_language(browser: httpx.AsyncClient) -> None:
    await log_in(browser, "lan")
    unknown = await browser.get("/meters/nowhere?lang=en")
    assert (unknown.status_code, "Not found" in unknown.text) == (404, True)
    invalid = await browser.get("/sites/s?day=yesterday")
    assert (invalid.status_code, "Invalid request" in invalid.text) == (422, True)  # English, remembered
