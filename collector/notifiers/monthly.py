"""The monthly report e-mail: on the 1st of each month, each unit's manager is sent the month before's
Directive 20 workbook (their unit's rows and the province's total), through the e-mail channel's outbox."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from collector.alerts import AlertStore
from collector.detectors.config import Sites
from collector.saving.export import month_reports, workbook
from collector.store import LedgerReader, Location
from kilowatch.timebase import VIETNAM_TZ, to_ms, utc_datetime

EMAIL = "email"
"""The channel that carries the workbooks (a webhook gets none)."""


class MonthlyReportNotice(BaseModel):
    """One unit's monthly report e-mail, as queued."""

    kind: Literal["monthly_report"] = "monthly_report"
    unit: str
    name: str
    month: str = Field(description="YYYY-MM")
    to: list[str] = Field(description="The unit's managers")
    workbook: str = Field(description="The XLSX workbook, base64")
    message_vi: str
    message_en: str

    @property
    def filename(self) -> str:
        return f"bao-cao-dien-{self.month}-{self.unit}.xlsx"


MonthlyReporter = Callable[[int, int], list[MonthlyReportNotice]]
"""The e-mails of a month (year, month): one per unit with a manager."""


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:+.1%}"


def ledger_monthly_reporter(ledger: Location, sites: Sites) -> MonthlyReporter:
    """The e-mails from `ledger`, on a connection of their own (any thread)."""

    def notices(year: int, month: int) -> list[MonthlyReportNotice]:
        managed = {unit_id: unit for unit_id, unit in sites.units.items() if unit.manager_email}
        if not managed:
            return []
        with LedgerReader(ledger) as reader:
            reports = month_reports(reader, sites, year, month)
        out = []
        for unit_id, unit in managed.items():
            mine = reports.of_unit(unit_id)
            [r3], [ytd] = mine.monthly.units, mine.ytd.units
            kwh = "-" if r3.use.kwh is None else f"{r3.use.kwh:,.0f}"
            out.append(
                MonthlyReportNotice(
                    unit=unit_id,
                    name=unit.name,
                    month=f"{year:04d}-{month:02d}",
                    to=list(unit.manager_email),
                    workbook=base64.b64encode(workbook(mine)).decode(),
                    message_vi=(
                        f"Kilowatch - báo cáo sử dụng điện tháng {month:02d}/{year} của {unit.name}: {kwh} kWh, "
                        f"{_percent(r3.change)} so với cùng kỳ; lũy kế năm tiết kiệm "
                        f"{_percent(ytd.saving)} (mục tiêu {_percent(ytd.target)}). "
                        "Chi tiết và ghi chú về số liệu trong tệp đính kèm."
                    ),
                    message_en=(
                        f"Kilowatch - electricity report for {year}-{month:02d}, {unit.name}: {kwh} kWh, "
                        f"{_percent(r3.change)} against the same month last year; year to date saving "
                        f"{_percent(ytd.saving)} (target {_percent(ytd.target)}). The attached workbook has "
                        "the figures and notes on the data."
                    ),
                )
            )
        return out

    return notices


def queue_monthly_reports(store: AlertStore, year: int, month: int, reporter: MonthlyReporter) -> int | None:
    """Queue the e-mails of a month; how many, or None when that month's were queued before."""
    bodies = [notice.model_dump_json() for notice in reporter(year, month)]
    return len(bodies) if store.enqueue_monthly_reports(f"{year:04d}-{month:02d}", EMAIL, bodies) else None


def next_monthly_ms(now_ms: int, at: time) -> int:
    """The first moment after `now_ms` that is the 1st of a month at local (Vietnam) time `at`."""
    local = utc_datetime(now_ms).astimezone(VIETNAM_TZ)
    candidate = datetime.combine(local.date().replace(day=1), at, tzinfo=VIETNAM_TZ)
    if candidate <= local:
        candidate = datetime.combine(_next_month(candidate.date()), at, tzinfo=VIETNAM_TZ)
    return to_ms(candidate)


def last_monthly_ms(now_ms: int, at: time) -> int:
    """The last moment at or before `now_ms` that was the 1st of a month at local time `at`."""
    local = utc_datetime(now_ms).astimezone(VIETNAM_TZ)
    candidate = datetime.combine(local.date().replace(day=1), at, tzinfo=VIETNAM_TZ)
    if candidate > local:
        candidate = datetime.combine(_month_before(candidate.date()), at, tzinfo=VIETNAM_TZ)
    return to_ms(candidate)


def month_before_ms(ms: int) -> tuple[int, int]:
    """(year, month) of the month before the one `ms` falls in (Vietnam time): the one a mail sent at `ms` covers."""
    before = _month_before(utc_datetime(ms).astimezone(VIETNAM_TZ).date())
    return before.year, before.month


def _next_month(d: date) -> date:
    return (d.replace(day=1) + timedelta(days=32)).replace(day=1)


def _month_before(d: date) -> date:
    return (d.replace(day=1) - timedelta(days=1)).replace(day=1)
