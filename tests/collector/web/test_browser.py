"""The web app in a real browser: Debian's headless Chromium, driven by Playwright, against a real collector
(its own process, fed by the simulator's history through Mosquitto, detection on) that raised an alert.

Every page is opened in both languages; the figures a page shows are checked against the API's answers;
an alert is acknowledged by clicking its button. Screenshots go to the test's tmp_path (pytest keeps the
latest runs' folders, so a failed test leaves them there to look at).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from app.processes import Mosquitto, Process, require_binary, wait_until
from collector.access import Access, Role
from collector.alerts import AlertStore
from collector.detectors.findings import Detector
from collector.reports import SiteDay
from collector.store import AlertQuery
from collector.store.access import AccessStore
from collector.web import figures, i18n
from tests.alert_support import call
from tests.collector.test_detect_live import DAYS, INTERVAL_S, detecting_collector, scenario

CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "lan", "browser-test-pass-42"  # the test user's
SITE, DAY = "office", "2025-06-08"
"""The scenario's Sunday, when the cooling is left on: the day of the after-hours alert."""
METERS = ("office.main", "office.cooling")


@pytest.fixture
def collector(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[str]:
    """The API's base URL of a collector that has stored the scenario's three days and its alert."""
    command, base = detecting_collector(tmp_path / "kilowatch.db", tmp_path, mosquitto, {"digest_at": None})
    broker = f"mqtt://{mosquitto.host}:{mosquitto.port}"
    with AccessStore(tmp_path / "kilowatch.db") as store:
        Access(store).add_user(USER, PASSWORD, Role.MANAGER, [SITE], 0)
    process = Process("collector", command, tmp_path / "collector.log").start()
    try:
        wait_until(lambda: call(f"{base}/healthz")["mqtt_connected"], 20, "the collector to subscribe")
        generate = ["sim", "generate", "--scenario", str(scenario(tmp_path)), "--days", str(DAYS)]
        publish = subprocess.run(
            [sys.executable, "-m", "app", *generate, "--interval", str(INTERVAL_S), "--publish", broker],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert publish.returncode == 0, publish.stdout + publish.stderr
        wait_until(lambda: _alerts(tmp_path), 30, "the after-hours alert")
        wait_until(_settled(tmp_path), 30, "detection to settle (no alert opened or resolved for 2 s)")
        yield base
    finally:
        process.stop()


def _settled(tmp_path: Path) -> Callable[[], bool]:
    """True once the alerts (and their states) are the same as 2 s before: the backlog is judged, and the
    pages and the API, asked one after the other, see the same alerts."""
    seen: list[list[tuple[int, str]]] = []

    def settled() -> bool:
        with AlertStore(tmp_path / "kilowatch.db") as store:
            seen.append([(a.id, a.status.value) for a in store.alerts(AlertQuery(limit=1000))])
        if len(seen) > 1 and seen[-1] == seen[-2]:
            return True
        time.sleep(2)
        return False

    return settled


def _alerts(tmp_path: Path) -> bool:
    with AlertStore(tmp_path / "kilowatch.db") as store:
        return bool(store.alerts(AlertQuery(detector=Detector.AFTER_HOURS)))


@pytest.fixture
def browser() -> Iterator[Browser]:
    require_binary("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def figure(text: str, lang: i18n.Lang) -> float | None:
    """The number a page shows, read back the way `lang` writes it (units and percent signs dropped)."""
    if text.strip() == i18n.MISSING:
        return None
    digits = re.sub(r"[^\d,.\-]", "", text)
    if lang is i18n.Lang.VI:
        digits = digits.replace(".", "").replace(",", ".")
    return float(digits.replace(",", ""))


def shown(page: Page, scope: str, name: str, lang: i18n.Lang) -> float | None:
    return figure(page.locator(f'{scope} [data-figure="{name}"]').first.inner_text(), lang)


def approx(value: float | None, digits: int) -> Any:
    return None if value is None else pytest.approx(round(value, digits), abs=10**-digits / 2)


def api(page: Page, base: str, path: str) -> Any:
    """The API's answer, asked with the page's own session cookie."""
    response = page.context.request.get(f"{base}{path}")
    assert response.ok, (path, response.status, response.text())
    return response.json()


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/")
    assert "/login?next=" in page.url
    page.fill('input[name="username"]', USER)
    page.fill('input[name="password"]', PASSWORD)
    page.click("#login")
    page.wait_for_url(f"{base}/")


def check_overview(page: Page, base: str, lang: i18n.Lang) -> None:
    report = SiteDay.model_validate(api(page, base, f"/api/v1/sites/{SITE}/report?day={DAY}"))
    totals = figures.site_totals(report)
    card = f'[data-site="{SITE}"]'
    assert shown(page, card, "energy_kwh", lang) == approx(totals.energy_kwh, 1)
    assert shown(page, card, "cost_vnd", lang) == approx(totals.cost_vnd, 0)
    assert shown(page, card, "after_hours_share", lang) == approx(_pct(totals.after_hours_share), 1)
    assert shown(page, card, "peak_band_share", lang) == approx(_pct(totals.peak_band_share), 1)
    open_alerts = api(page, base, f"/api/v1/alerts?site={SITE}&status=open&limit=1000")
    assert shown(page, card, "open_alerts", lang) == len(open_alerts)


def _pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def check_site(page: Page, base: str, lang: i18n.Lang) -> None:
    report = api(page, base, f"/api/v1/sites/{SITE}/report?day={DAY}")
    for meter in report["meters"]:
        row = f'#report tr[data-meter="{meter["meter"]}"]'
        assert shown(page, row, "energy_kwh", lang) == approx(meter["energy_kwh"], 1)
        assert shown(page, row, "cost_vnd", lang) == approx(meter["cost_vnd"], 0)
        assert shown(page, row, "after_hours_share", lang) == approx(_pct(meter["after_hours_share"]), 1)
        assert shown(page, row, "wasted_kwh", lang) == approx(meter["wasted_kwh"], 1)
        assert shown(page, row, "alerts", lang) == meter["alerts"]
    assert page.locator("#chart canvas").count() > 0, "the load chart is drawn"


def check_meter(page: Page, base: str, meter: str, lang: i18n.Lang) -> None:
    table = page.locator("#intervals")
    window = urlencode({"from": table.get_attribute("data-from"), "to": table.get_attribute("data-to")})
    answer = api(page, base, f"/api/v1/meters/{meter}/intervals?{window}")
    intervals = list(reversed(answer["intervals"]))
    rows = table.locator("tbody tr")
    assert rows.count() == len(intervals) > 0
    for index in (0, len(intervals) // 2, len(intervals) - 1):
        interval, row = (
            intervals[index],
            f'#intervals tr[data-start="{intervals[index]["start"].replace("Z", "+00:00")}"]',
        )
        assert shown(page, row, "energy_import_kwh", lang) == approx(interval["energy_import_kwh"], 3)
        assert shown(page, row, "mean_kw", lang) == approx(interval["mean_kw"], 2)
        assert shown(page, row, "samples", lang) == interval["samples"]
    latest = api(page, base, f"/api/v1/meters/{meter}/latest")
    assert page.locator('#quality [data-figure="quality"]').inner_text() == latest["quality"]
    assert shown(page, "#quality", "power_kw", lang) == approx(latest["values"]["active_power_w"] / 1000, 2)
    assert page.locator("#chart canvas").count() > 0, "the power chart is drawn"
    zoom_in(page)


def zoom_in(page: Page) -> None:
    """Dragging across the middle of the chart zooms in on that stretch of time."""
    span = "() => window.kilowatchChart.scales.x.max - window.kilowatchChart.scales.x.min"
    before = page.evaluate(span)
    box = page.locator("#chart .u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
    page.mouse.up()
    assert page.evaluate(span) < before / 3


def check_alert(page: Page, base: str, alert_id: int, lang: i18n.Lang) -> None:
    alert = api(page, base, f"/api/v1/alerts/{alert_id}")
    assert shown(page, "", "wasted_kwh", lang) == approx(alert["wasted_kwh"], 1)
    assert shown(page, "", "cost_vnd", lang) == approx(alert["cost_vnd"], 0)
    assert alert[f"message_{lang}"] in page.locator(".message").inner_text()


def test_every_page_in_both_languages_shows_the_apis_figures(
    collector: str, browser: Browser, tmp_path: Path
) -> None:
    base, screens = collector, tmp_path / "screenshots"
    screens.mkdir()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    log_in(page, base)
    [alert] = api(page, base, f"/api/v1/alerts?detector=after_hours&meter={METERS[1]}")
    pages = {
        "overview": f"/?day={DAY}",
        "site": f"/sites/{SITE}?day={DAY}",
        **{f"meter-{m}": f"/meters/{m}" for m in METERS},
        "alerts": "/alerts",
        "alert": f"/alerts/{alert['id']}",
    }
    for lang in i18n.Lang:
        words = i18n.catalogue(lang)
        for name, path in pages.items():
            page.goto(f"{base}{path}{'&' if '?' in path else '?'}lang={lang}")
            assert page.locator("html").get_attribute("lang") == lang
            assert page.locator("#lang-switch").inner_text() == words["other_language"]
            page.screenshot(path=str(screens / f"{lang}-{name}.png"), full_page=True)
            if name == "overview":
                check_overview(page, base, lang)
            elif name == "site":
                check_site(page, base, lang)
            elif name.startswith("meter-"):
                check_meter(page, base, name.removeprefix("meter-"), lang)
            elif name == "alert":
                check_alert(page, base, alert["id"], lang)
            else:
                assert page.locator(f'tr[data-alert="{alert["id"]}"]').count() == 1

    # Acknowledged through the page: its script sends the API's route with the anti-forgery token.
    page.goto(f"{base}/alerts/{alert['id']}?lang=en")
    assert page.locator("#status").inner_text() == "Open"
    page.click("#acknowledge")
    page.wait_for_function("document.getElementById('status').textContent === 'Acknowledged'")
    page.screenshot(path=str(screens / "en-alert-acknowledged.png"), full_page=True)
    assert api(page, base, f"/api/v1/alerts/{alert['id']}")["status"] == "acknowledged"

    # Silenced through the page: the main meter's alert of the same Sunday.
    [other] = api(page, base, f"/api/v1/alerts?detector=after_hours&meter={METERS[0]}")
    page.goto(f"{base}/alerts/{other['id']}?lang=vi")
    page.fill('input[name="reason"]', "Đang sửa điều hoà")
    page.click("#silence")
    page.wait_for_selector("#silenced-until")
    silenced = api(page, base, f"/api/v1/alerts/{other['id']}")
    assert silenced["silence_reason"] == "Đang sửa điều hoà"
    assert silenced["silenced_until"] is not None
    page.screenshot(path=str(screens / "vi-alert-silenced.png"), full_page=True)

    # A phone's screen: one column, nothing wider than the screen.
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        storage_state=page.context.storage_state(),
    ).new_page()
    phone.goto(f"{base}/?day={DAY}")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(screens / "vi-overview-phone.png"), full_page=True)

    # Logging out ends the session (the API's route, with the anti-forgery token): back to the login page.
    page.click("#logout")
    page.wait_for_url(f"{base}/login")
    page.goto(f"{base}/alerts")
    assert "/login?next=%2Falerts" in page.url
    for lang in i18n.Lang:
        page.goto(f"{base}/login?lang={lang}")
        assert page.locator("#login").inner_text() == i18n.catalogue(lang)["login"]
        page.screenshot(path=str(screens / f"{lang}-login.png"), full_page=True)
