"""The Directive 20 reports on a simulated province: `sim generate` writes 426 days at 15 minutes of the
province-year scenario (known yearly changes, a missing month, a feeder with known losses), the ledger
ingests them, and every figure of the API's JSON and CSV, the command's workbook and the monthly e-mail is
checked against figures this test computes itself from the generated counters."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import holidays
import httpx
import numpy as np
import openpyxl
import pytest
from typer.testing import CliRunner

from app.cli import app as kilowatch
from collector.api.app import create_app
from collector.config import NotifySettings
from collector.detectors.config import Sites, load_sites
from collector.metrics import CollectorMetrics
from collector.notifiers.dispatch import Notifications
from collector.notifiers.monthly import ledger_monthly_reporter, queue_monthly_reports
from collector.notifiers.smtp import EmailChannel
from collector.store import Ledger
from kilowatch.mqtt_contract import ReadingsBatch
from kilowatch.timebase import DAY_MS, OFFSET_MS, VIETNAM_TZ, to_ms
from sim.generate import npz_batches
from sim.weather import daily_mean_temperature
from tests.alert_support import FakeClock, open_store
from tests.api_support import api_client
from tests.collector.notifiers.test_smtp import Mailbox, email_settings
from tests.collector.notifiers.test_smtp import smtp_server as smtp_server
from tests.services import eventually

DAYS = 426
"""2026-01-01 to 2027-03-01 included: January and February of both years, whole."""
SEED = 2026
ROUNDING = 1e-6
"""Readings carry counters to 4 decimals (the generated arrays are exact): sums agree to about 1e-4 kWh."""
OFFICE = ("so-cong-thuong", "ubnd-huyen")
STATED = {"so-cong-thuong": -0.06, "ubnd-huyen": -0.02, "chieu-sang-tp": -0.35, "nha-may": 0.01}
"""The scenario's yearly_change per unit."""
FEEDER_LOSSES = 0.06
"""The scenario's feeder reads its cabinets x 1.06: a loss share of 0.06 / 1.06."""

SITES_YAML = """
sites: {}
units:
  so-cong-thuong:
    name: Sở Công Thương
    category: public_office
    meters: [so-cong-thuong.main]
    manager_email: [van-phong@sct.example.vn]
  ubnd-huyen: {name: UBND huyện, category: public_office, meters: [ubnd-huyen.main]}
  chieu-sang-tp:
    name: Chiếu sáng TP
    category: public_lighting
    meters: [chieu-sang-tp.feeder]
    sub_meters: {chieu-sang-tp.feeder: [chieu-sang-tp.cabinet-1, chieu-sang-tp.cabinet-2]}
    calendar: {occupancy: {days: [0, 1, 2, 3, 4, 5, 6]}, public_holidays: false}
    manager_email: [chieu-sang@example.vn, giam-doc@example.vn]
  nha-may:
    name: Nhà máy
    category: large_user
    meters: [nha-may.press]
    calendar: {occupancy: {days: [0, 1, 2, 3, 4, 5]}}
reporting:
  temperature_file: {temperatures}
"""

UNIT_METERS = {
    "so-cong-thuong": ["so-cong-thuong.main"],
    "ubnd-huyen": ["ubnd-huyen.main"],
    "chieu-sang-tp": ["chieu-sang-tp.feeder"],
    "nha-may": ["nha-may.press"],
}
WORKDAYS = {"so-cong-thuong": 5, "ubnd-huyen": 5, "chieu-sang-tp": 7, "nha-may": 6}
"""How many weekdays (from Monday) each unit works; the offices and the plant close on public holidays."""


@dataclass(frozen=True)
class Province:
    ledger: Path
    sites_file: Path
    sites: Sites
    days: dict[str, dict[date, tuple[float, int]]]
    """Per meter, per day: (kWh, 15-minute intervals with energy), from the generated counters."""


def _expected_days(dataset: Path) -> dict[str, dict[date, tuple[float, int]]]:
    """Each 15-minute step between two answered polls is one interval's energy, on the local day it starts."""
    out: dict[str, dict[date, tuple[float, int]]] = {}
    for path in sorted((dataset / "readings").glob("*/*.npz")):
        with np.load(path) as data:
            ts, status, energy, meters = data["ts"], data["status"], data["energy_import_kwh"], data["meter"]
        for j, meter in enumerate(meters.tolist()):
            good = status[:, j] == 0
            step = good[:-1] & good[1:] & (np.diff(ts) == 900_000)
            kwh = np.diff(energy[:, j])[step]
            day = (ts[:-1][step] + OFFSET_MS) // DAY_MS
            by_day: dict[date, tuple[float, int]] = {}
            for d in np.unique(day).tolist():
                mask = day == d
                by_day[date(1970, 1, 1) + timedelta(days=d)] = (float(kwh[mask].sum()), int(mask.sum()))
            out[meter] = by_day
    return out


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Province:
    root = tmp_path_factory.mktemp("province")
    dataset = root / "dataset"
    result = CliRunner().invoke(
        kilowatch,
        ["sim", "generate", "--scenario", "province-year", "--days", str(DAYS), "--interval", "900",
         "--format", "npz", "--out", str(dataset)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ledger = root / "kilowatch.db"
    with Ledger(ledger) as writer:
        for path in sorted((dataset / "readings").glob("*/*.npz")):
            batches = [ReadingsBatch.model_validate(b) for b in npz_batches(path)]
            for first in range(0, len(batches), 2000):
                writer.store(batches[first : first + 2000], received_at=0)
    temperatures = root / "temperatures.csv"
    result = CliRunner().invoke(
        kilowatch,
        ["sim", "weather", "--scenario", "province-year", "--from", "2025-01-01", "--to", "2027-03-31",
         "--out", str(temperatures)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sites_file = root / "sites.yaml"
    sites_file.write_text(SITES_YAML.replace("{temperatures}", str(temperatures)))
    return Province(ledger, sites_file, load_sites(sites_file), _expected_days(dataset))


# What the reports should say, computed here from the counters alone.


def _working(unit: str, d: date) -> bool:
    if WORKDAYS[unit] == 7:
        return True
    return d.weekday() < WORKDAYS[unit] and d not in holidays.country_holidays("VN", years=d.year)


def _month_days(year: int, month: int) -> list[date]:
    first = date(year, month, 1)
    return [first + timedelta(days=i) for i in range(31) if (first + timedelta(days=i)).month == month]


@dataclass(frozen=True)
class Expected:
    kwh: float | None
    measured: float
    estimated: float | None
    completeness: float
    working_days: int
    days: int


def _expected_month(p: Province, unit: str, year: int, month: int) -> Expected:
    """A missing interval of a meter is worth the mean interval of its days of the same kind that month."""
    days = _month_days(year, month)
    measured = estimated = 0.0
    present = 0
    known = True
    for meter in UNIT_METERS[unit]:
        sums: dict[bool, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # kWh, intervals, slots
        for d in days:
            kwh, n = p.days[meter].get(d, (0.0, 0))
            s = sums[_working(unit, d)]
            s[0], s[1], s[2] = s[0] + kwh, s[1] + n, s[2] + 96
        all_kwh = sum(s[0] for s in sums.values())
        all_n = sum(s[1] for s in sums.values())
        measured += all_kwh
        present += int(all_n)
        for kind_kwh, got, slots in sums.values():
            if slots > got:
                if got:
                    estimated += (slots - got) * kind_kwh / got
                elif all_n:
                    estimated += (slots - got) * all_kwh / all_n
                else:
                    known = False
    expected_slots = 96 * len(days) * len(UNIT_METERS[unit])
    return Expected(
        measured + estimated if known else None,
        measured,
        estimated if known else None,
        present / expected_slots,
        sum(_working(unit, d) for d in days),
        len(days),
    )


def _sum(months: list[Expected]) -> Expected:
    known = all(m.kwh is not None for m in months)
    days = sum(m.days for m in months)
    return Expected(
        sum(m.kwh or 0.0 for m in months) if known else None,
        sum(m.measured for m in months),
        sum(m.estimated or 0.0 for m in months) if known else None,
        sum(m.completeness * m.days for m in months) / days,
        sum(m.working_days for m in months),
        days,
    )


def _degree_days(year: int, month: int) -> tuple[float, float]:
    """Mean cooling and heating degree days (base 18 °C) per day of a month."""
    t = np.array([round(daily_mean_temperature(SEED, d), 3) for d in _month_days(year, month)])
    return float(np.maximum(t - 18, 0).mean()), float(np.maximum(18 - t, 0).mean())


def _weather_model(p: Province, unit: str) -> tuple[float, float, float]:
    """(CV(RMSE), NMBE) of kWh/day ~ 1 + CDD/day + HDD/day over 2026's months, and the kWh it expects for
    January-February 2027's weather."""
    months = [_expected_month(p, unit, 2026, m) for m in range(1, 13)]
    x = np.array([(1.0, *_degree_days(2026, m)) for m in range(1, 13)])
    y = np.array([(m.kwh or 0.0) / m.days for m in months])
    fit, *_ = np.linalg.lstsq(x, y, rcond=None)
    residuals = y - x @ fit
    cv = float(np.sqrt((residuals**2).sum() / (12 - 3)) / y.mean())
    nmbe = float(residuals.sum() / ((12 - 3) * y.mean()))
    expected = sum(
        float(np.array([1.0, *_degree_days(2027, m)]) @ fit) * len(_month_days(2027, m)) for m in (1, 2)
    )
    return cv, nmbe, expected


def _check_use(got: dict[str, Any], want: Expected) -> None:
    assert got["measured_kwh"] == pytest.approx(want.measured, rel=ROUNDING)
    assert got["completeness"] == pytest.approx(want.completeness, rel=1e-12)
    assert got["working_days"] == want.working_days
    if want.kwh is None:
        assert got["kwh"] is None
        return
    assert got["kwh"] == pytest.approx(want.kwh, rel=ROUNDING)
    assert got["estimated_kwh"] == pytest.approx(want.estimated, rel=ROUNDING, abs=1e-3)
    assert got["kwh_per_day"] == pytest.approx(want.kwh / want.days, rel=ROUNDING)
    assert got["kwh_per_working_day"] == pytest.approx(want.kwh / want.working_days, rel=ROUNDING)


@pytest.fixture
async def client(province: Province) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        ledger=province.ledger,
        metrics=CollectorMetrics(),
        mqtt_connected=lambda: True,
        sites=province.sites,
    )
    async with api_client(app, province.ledger) as c:
        yield c


async def test_r3_compares_each_unit_with_the_same_month_last_year(
    province: Province, client: httpx.AsyncClient
) -> None:
    response = await client.get("/api/v1/reports/monthly", params={"month": "2027-01"})
    assert response.status_code == 200, response.text
    report = response.json()
    units = {u["unit"]: u for u in report["units"]}
    assert list(units) == list(UNIT_METERS)
    for unit in UNIT_METERS:
        now, before = _expected_month(province, unit, 2027, 1), _expected_month(province, unit, 2026, 1)
        _check_use(units[unit]["use"], now)
        _check_use(units[unit]["last_year"], before)
    # January 2026 is missing whole at the district office: nothing to compare with
    assert units["ubnd-huyen"]["not_comparable"] == "no_data_last_year"
    assert units["ubnd-huyen"]["last_year"]["completeness"] == 0
    assert units["ubnd-huyen"]["change"] is None
    # five silent days at the Department: 26 of 31 days (and the interval before the outage) is under 90 %
    sct = units["so-cong-thuong"]
    assert sct["not_comparable"] == "incomplete"
    assert sct["use"]["completeness"] == pytest.approx((26 * 96 - 1) / (31 * 96))
    assert sct["use"]["estimated_kwh"] > 0
    # the others compare: change raw and per working day, from this test's own sums
    for unit in ("chieu-sang-tp", "nha-may"):
        now, before = _expected_month(province, unit, 2027, 1), _expected_month(province, unit, 2026, 1)
        assert now.kwh is not None
        assert before.kwh is not None
        assert units[unit]["not_comparable"] is None
        assert units[unit]["change"] == pytest.approx(now.kwh / before.kwh - 1, rel=ROUNDING)
        per_day = (now.kwh / now.working_days) / (before.kwh / before.working_days) - 1
        assert units[unit]["change_per_working_day"] == pytest.approx(per_day, rel=ROUNDING)
        assert units[unit]["increased"] == (now.kwh > before.kwh)
    # lighting follows its stated -35 % a year to within a point (its lamps vary with the night's length)
    assert units["chieu-sang-tp"]["change"] == pytest.approx(STATED["chieu-sang-tp"], abs=0.01)

    as_csv = await client.get("/api/v1/reports/monthly", params={"month": "2027-01", "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = {r["unit"]: r for r in csv.DictReader(io.StringIO(as_csv.text))}
    assert float(rows["nha-may"]["kwh"]) == pytest.approx(units["nha-may"]["use"]["kwh"])
    assert rows["ubnd-huyen"]["not_comparable"] == "no_data_last_year"
    assert rows["ubnd-huyen"]["change"] == ""


def _expected_ytd(p: Province, unit: str, year: int, through: int) -> Expected:
    return _sum([_expected_month(p, unit, year, m) for m in range(1, through + 1)])


async def test_the_year_to_date_against_targets_and_the_province(
    province: Province, client: httpx.AsyncClient
) -> None:
    response = await client.get("/api/v1/reports/ytd", params={"year": 2027, "through": 2})
    assert response.status_code == 200, response.text
    report = response.json()
    units = {u["unit"]: u for u in report["units"]}
    targets = {"so-cong-thuong": 0.05, "ubnd-huyen": 0.05, "chieu-sang-tp": 0.30, "nha-may": 0.02}
    rules = {"so-cong-thuong": "R1", "ubnd-huyen": "R1", "chieu-sang-tp": "R5", "nha-may": "R8"}
    total_now = total_before = 0.0
    for unit in UNIT_METERS:
        now, before = _expected_ytd(province, unit, 2027, 2), _expected_ytd(province, unit, 2026, 2)
        got = units[unit]
        _check_use(got["use"], now)
        _check_use(got["last_year"], before)
        assert (got["target"], got["rule"]) == (targets[unit], rules[unit])
        if unit == "ubnd-huyen":
            assert got["not_comparable"] == "no_data_last_year"
            assert got["saving"] is None
            assert not got["behind"]
            continue
        assert now.kwh is not None
        assert before.kwh is not None
        assert now.completeness >= 0.9  # the Department's five silent days are estimated over two months
        assert got["saving"] == pytest.approx(1 - now.kwh / before.kwh, rel=ROUNDING)
        assert got["behind"] == (1 - now.kwh / before.kwh < targets[unit])
        total_now += now.kwh
        total_before += before.kwh
    # the savings are the scenario's, give or take the calendar (Tết, one more Sunday in 2027) and the weather
    assert units["chieu-sang-tp"]["saving"] == pytest.approx(-STATED["chieu-sang-tp"], abs=0.01)
    assert units["so-cong-thuong"]["saving"] == pytest.approx(-STATED["so-cong-thuong"], abs=0.03)
    assert not units["chieu-sang-tp"]["behind"]
    assert not units["so-cong-thuong"]["behind"]
    assert units["nha-may"]["below_large_user"] is False  # some 1.3 GWh a year: R8 binds it

    total = report["total"]
    assert total["units"] == 3
    assert total["left_out"] == ["ubnd-huyen"]
    assert total["kwh"] == pytest.approx(total_now, rel=ROUNDING)
    assert total["last_year_kwh"] == pytest.approx(total_before, rel=ROUNDING)
    assert total["saving"] == pytest.approx(1 - total_now / total_before, rel=ROUNDING)
    assert total["behind"] == (1 - total_now / total_before < 0.02)

    # the weather model: fitted on 2026's months, judged by Guideline 14, normalising where it passes
    for unit in ("chieu-sang-tp", "nha-may"):
        weather = units[unit]["weather"]
        cv, nmbe, expected = _weather_model(province, unit)
        assert weather["months"] == 12
        assert weather["cv_rmse"] == pytest.approx(cv, rel=1e-4)
        assert weather["nmbe"] == pytest.approx(nmbe, abs=1e-9)
        assert weather["passes"] == (cv <= 0.15 and abs(nmbe) <= 0.05)
        now = _expected_ytd(province, unit, 2027, 2)
        assert now.kwh is not None
        assert weather["expected_kwh"] == pytest.approx(expected, rel=1e-4)
        assert weather["saving"] == pytest.approx(1 - now.kwh / expected, rel=1e-3)
    assert units["so-cong-thuong"]["weather"]["saving"] is None  # January 2027 is not 90 % complete

    rows = list(csv.DictReader(io.StringIO((await client.get(
        "/api/v1/reports/ytd", params={"year": 2027, "through": 2, "format": "csv"})).text)))  # fmt: skip
    assert rows[-1]["unit"] == "province"
    assert float(rows[-1]["saving"]) == pytest.approx(total["saving"])


async def test_the_ytd_period_defaults_to_the_months_that_have_ended(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/reports/ytd", params={"year": 2999})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_losses_of_the_feeder_per_day_and_month(province: Province, client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/reports/losses", params={"month": "2027-01"})
    assert response.status_code == 200, response.text
    [tree] = response.json()["trees"]
    assert tree["parent"] == "chieu-sang-tp.feeder"
    feeder = province.days["chieu-sang-tp.feeder"]
    cabinets = [province.days[f"chieu-sang-tp.cabinet-{i}"] for i in (1, 2)]
    parent_total = sub_total = 0.0
    for day in tree["days"]:
        d = date.fromisoformat(day["day"])
        parent = feeder[d][0]
        subs = sum(c[d][0] for c in cabinets)
        assert day["loss"] == pytest.approx((parent - subs) / parent, abs=1e-5)
        parent_total, sub_total = parent_total + parent, sub_total + subs
    assert tree["complete_days"] == 31
    assert tree["loss"] == pytest.approx((parent_total - sub_total) / parent_total, abs=1e-6)
    assert tree["loss"] == pytest.approx(FEEDER_LOSSES / (1 + FEEDER_LOSSES), abs=1e-4)
    assert tree["flagged"]  # above the 4.9 % of the plan


def _sheet_rows(book: openpyxl.Workbook, title: str) -> list[tuple[Any, ...]]:
    return list(book[title].iter_rows(values_only=True))


def test_the_command_writes_the_departments_workbook(province: Province, tmp_path: Path) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"mqtt: {{host: 127.0.0.1}}\nledger: {{path: {province.ledger}}}\n"
        f"detection: {{enabled: true, sites: {province.sites_file}}}\n"
    )
    out = tmp_path / "bao-cao.xlsx"
    result = CliRunner().invoke(
        kilowatch,
        ["collector", "report", "monthly", "--month", "2027-01", "--out", str(out), "-c", str(config)],
    )
    assert result.exit_code == 0, result.output
    book = openpyxl.load_workbook(out)
    assert book.sheetnames == ["R3 So sánh tháng", "R1-R5-R8-R2 Lũy kế năm", "R11 Tổn thất", "Ghi chú"]

    r3 = _sheet_rows(book, "R3 So sánh tháng")
    assert r3[0][0] == "BÁO CÁO TÌNH HÌNH SỬ DỤNG ĐIỆN THÁNG 01/2027 SO VỚI CÙNG KỲ NĂM 2026"
    assert r3[3][:4] == ("STT", "Đơn vị", "Loại đơn vị", "Điện năng tháng (kWh)")
    by_name = {row[1]: row for row in r3[4:8]}
    lighting = by_name["Chiếu sáng TP"]
    now, before = (
        _expected_month(province, "chieu-sang-tp", 2027, 1),
        _expected_month(province, "chieu-sang-tp", 2026, 1),
    )
    assert now.kwh is not None
    assert before.kwh is not None
    assert lighting[2] == "Chiếu sáng công cộng"
    assert lighting[3] == pytest.approx(now.kwh)
    assert lighting[7] == pytest.approx(before.kwh)
    assert lighting[9] == pytest.approx(now.kwh / before.kwh - 1)
    assert lighting[11] == pytest.approx(1.0)
    assert book["R3 So sánh tháng"]["J5"].number_format == "0.0%"
    assert by_name["UBND huyện"][9] is None
    assert "không có số liệu cùng kỳ năm trước" in by_name["UBND huyện"][13]
    department = by_name["Sở Công Thương"]
    assert "số liệu kỳ này chưa đủ 90%" in department[13]
    assert "ước tính" in department[13]
    assert department[12] == pytest.approx(_expected_month(province, "so-cong-thuong", 2027, 1).estimated)

    ytd = _sheet_rows(book, "R1-R5-R8-R2 Lũy kế năm")
    assert ytd[0][0] == "LŨY KẾ TIẾT KIỆM ĐIỆN TỪ ĐẦU NĂM ĐẾN HẾT THÁNG 01/2027 SO VỚI CÙNG KỲ NĂM 2026"
    province_row = ytd[8]
    assert province_row[1] == "Toàn tỉnh (2 đơn vị)"  # January: the Department's is under 90 %, left out
    assert province_row[3] == "R2"
    lighting_ytd = next(row for row in ytd[4:8] if row[1] == "Chiếu sáng TP")
    assert lighting_ytd[3] == "R5"
    assert lighting_ytd[6] == pytest.approx(1 - now.kwh / before.kwh)
    assert lighting_ytd[7] == pytest.approx(0.30)
    assert lighting_ytd[8] == "Đạt"

    losses = _sheet_rows(book, "R11 Tổn thất")
    assert losses[4][:4] == ("Chiếu sáng TP", "chieu-sang-tp.feeder", "chieu-sang-tp.cabinet-1, chieu-sang-tp.cabinet-2",
                             "Tháng 01/2027")  # fmt: skip
    assert losses[4][6] == pytest.approx(FEEDER_LOSSES / (1 + FEEDER_LOSSES), abs=1e-4)
    assert "31/31 ngày đủ số liệu; vượt ngưỡng" in losses[4][8]
    assert len(losses) == 4 + 1 + 31
    assert "ASHRAE Guideline 14" in " ".join(str(r[0]) for r in _sheet_rows(book, "Ghi chú"))


async def test_each_manager_is_mailed_their_units_workbook_once(
    province: Province, tmp_path: Path, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp_server
    clock = FakeClock(to_ms(datetime(2027, 2, 1, 8, 5, tzinfo=VIETNAM_TZ)))
    store = open_store(province.ledger, clock, channels=("email",))
    reporter = ledger_monthly_reporter(province.ledger, province.sites)
    notifications = Notifications(
        store=store,
        channels=[EmailChannel(email_settings(port))],
        settings=NotifySettings(retry_min_s=0.02, retry_max_s=0.1, poll_s=0.5, digest_at=None),
        monthly=reporter,
        clock=clock,
    )
    task = asyncio.create_task(notifications.run())
    try:  # started after 08:00 on the 1st: January's are owed and sent at once
        await eventually(lambda: len(mailbox.messages) == 2, "the two managers' mails", within_s=60)
        assert await asyncio.to_thread(queue_monthly_reports, store, 2027, 1, reporter) is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
    mails: dict[str, EmailMessage] = {str(m["To"]): m for m in mailbox.messages}
    lighting = mails["chieu-sang@example.vn, giam-doc@example.vn"]
    assert lighting["Subject"] == "[kilowatch] Báo cáo điện tháng / Monthly report 2027-01: Chiếu sáng TP"
    [attachment] = list(lighting.iter_attachments())
    assert attachment.get_filename() == "bao-cao-dien-2027-01-chieu-sang-tp.xlsx"
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    book = openpyxl.load_workbook(io.BytesIO(payload))
    r3 = _sheet_rows(book, "R3 So sánh tháng")
    assert [row[1] for row in r3[4:]] == ["Chiếu sáng TP"]  # their unit only
    assert _sheet_rows(book, "R1-R5-R8-R2 Lũy kế năm")[5][1] == "Toàn tỉnh (2 đơn vị)"  # and the province
    body = lighting.get_body(("plain",))
    assert body is not None
    text = str(body.get_content())
    assert "báo cáo sử dụng điện tháng 01/2027 của Chiếu sáng TP" in text
    assert "electricity report for 2027-01, Chiếu sáng TP" in text
    assert "van-phong@sct.example.vn" in mails


async def test_without_units_the_reports_are_not_found(tmp_path: Path) -> None:
    Ledger(tmp_path / "kilowatch.db").close()
    app = create_app(
        ledger=tmp_path / "kilowatch.db",
        metrics=CollectorMetrics(),
        mqtt_connected=lambda: True,
        sites=Sites(sites={}),
    )
    async with api_client(app, tmp_path / "kilowatch.db") as c:
        response = await c.get("/api/v1/reports/losses", params={"month": "2027-01"})
        assert response.status_code == 404
        assert "no units" in response.json()["detail"]
        assert (await c.get("/api/v1/reports/monthly", params={"month": "2027-13"})).status_code == 422


def test_the_command_refuses_a_month_it_cannot_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        kilowatch, ["collector", "report", "monthly", "--month", "January", "--out", str(tmp_path / "x.xlsx")]
    )
    assert result.exit_code == 2
    assert "--month 'January': expected YYYY-MM" in result.output
