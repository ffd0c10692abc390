"""The Directive 20 reports as CSV (one row per unit, tree or day, English column names) and as an XLSX
workbook for the Department of Industry and Trade: one sheet per report, Vietnamese headings with their
units, the gaps noted on each row and explained on a last sheet.

In the workbook a sheet's title is in row 1, its subject in row 2, the column headings in
:data:`HEADER_ROW` and the rows below; shares are numbers formatted as percentages, energy in kWh.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from collector.detectors.config import Sites, UnitCategory
from collector.saving import figures
from collector.saving.figures import (
    LossReport,
    MonthlyReport,
    NotComparable,
    UnitMonth,
    UnitYtd,
    Use,
    YtdReport,
)
from collector.saving.weather import load_temperatures
from collector.store import LedgerReader

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
"""The workbook's media type."""

HEADER_ROW = 4
"""The row of every sheet's column headings (1-based); data begin on the row below."""

SHEETS = ("R3 So sánh tháng", "R1-R5-R8-R2 Lũy kế năm", "R11 Tổn thất", "Ghi chú")

CATEGORY_VI = {
    UnitCategory.PUBLIC_OFFICE: "Cơ quan, công sở",
    UnitCategory.PUBLIC_LIGHTING: "Chiếu sáng công cộng",
    UnitCategory.LARGE_USER: "Cơ sở tiêu thụ ≥ 1 triệu kWh/năm",
    UnitCategory.OTHER: "Khác",
}
REASON_VI = {
    NotComparable.NO_DATA: "không có số liệu kỳ này",
    NotComparable.NO_DATA_LAST_YEAR: "không có số liệu cùng kỳ năm trước",
    NotComparable.INCOMPLETE: "số liệu kỳ này chưa đủ {floor:.0%}",
    NotComparable.INCOMPLETE_LAST_YEAR: "số liệu cùng kỳ năm trước chưa đủ {floor:.0%}",
}

_PERCENT = "0.0%"
_KWH = "#,##0.0"
_BOLD = Font(bold=True)
_FLAG = PatternFill("solid", fgColor="FFC7CE")


def _csv(header: Sequence[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


MONTHLY_COLUMNS = (
    "unit", "name", "category", "month", "kwh", "kwh_per_day", "kwh_per_working_day", "working_days",
    "completeness", "estimated_kwh", "last_year_kwh", "last_year_kwh_per_working_day", "last_year_working_days",
    "last_year_completeness", "change", "change_per_working_day", "not_comparable", "increased",
)  # fmt: skip


def monthly_csv(report: MonthlyReport) -> str:
    return _csv(
        MONTHLY_COLUMNS,
        [
            [u.unit, u.name, u.category.value, report.month, u.use.kwh, u.use.kwh_per_day,
             u.use.kwh_per_working_day, u.use.working_days, u.use.completeness, u.use.estimated_kwh,
             u.last_year.kwh, u.last_year.kwh_per_working_day, u.last_year.working_days,
             u.last_year.completeness, u.change, u.change_per_working_day,
             u.not_comparable.value if u.not_comparable else None, u.increased]
            for u in report.units
        ],
    )  # fmt: skip


YTD_COLUMNS = (
    "unit", "name", "category", "rule", "first", "last", "kwh", "completeness", "estimated_kwh",
    "last_year_kwh", "last_year_completeness", "saving", "target", "behind", "not_comparable",
    "below_large_user", "weather_model_passes", "weather_cv_rmse", "weather_nmbe", "weather_normalised_saving",
)  # fmt: skip


def ytd_csv(report: YtdReport) -> str:
    rows = [
        [u.unit, u.name, u.category.value, u.rule, u.use.first, u.use.last, u.use.kwh, u.use.completeness,
         u.use.estimated_kwh, u.last_year.kwh, u.last_year.completeness, u.saving, u.target, u.behind,
         u.not_comparable.value if u.not_comparable else None, u.below_large_user,
         u.weather.passes if u.weather else None, u.weather.cv_rmse if u.weather else None,
         u.weather.nmbe if u.weather else None, u.weather.saving if u.weather else None]
        for u in report.units
    ]  # fmt: skip
    t = report.total
    rows.append(
        ["province", report.province, None, "R2", None, None, t.kwh, None, None, t.last_year_kwh, None,
         t.saving, t.target, t.behind, None, None, None, None, None, None]
    )  # fmt: skip
    return _csv(YTD_COLUMNS, rows)


LOSS_COLUMNS = (
    "unit",
    "parent",
    "sub_meters",
    "day",
    "parent_kwh",
    "sub_meters_kwh",
    "loss",
    "target",
    "flagged",
)


def losses_csv(report: LossReport) -> str:
    """A row per tree and day, then per tree the month (`day` empty) over its complete days."""
    rows: list[list[Any]] = []
    for t in report.trees:
        subs = " ".join(t.sub_meters)
        rows += [
            [t.unit, t.parent, subs, d.day, d.parent_kwh, d.sub_meters_kwh, d.loss, t.target, None]
            for d in t.days
        ]
        rows.append(
            [t.unit, t.parent, subs, None, t.parent_kwh, t.sub_meters_kwh, t.loss, t.target, t.flagged]
        )
    return _csv(LOSS_COLUMNS, rows)


def _gaps(use: Use, floor: float) -> str:
    """A note on a period's data: how complete, what was estimated."""
    period = f"{use.first:%d/%m/%Y}-{use.last:%d/%m/%Y}"
    if use.measured_kwh == 0:
        return f"{period}: không có số liệu"
    if use.kwh is None:
        return f"{period}: có tháng không có số liệu nào, không ước tính được"
    if use.completeness >= 1:
        return ""
    note = f"số liệu đủ {use.completeness:.1%}, ước tính {use.estimated_kwh or 0:,.1f} kWh"
    return note + (" (dưới ngưỡng so sánh)" if use.completeness < floor else "")


def _note(reason: NotComparable | None, use: Use, last_year: Use, floor: float) -> str:
    parts = []
    if reason is not None:
        parts.append("Không so sánh: " + REASON_VI[reason].format(floor=floor))
    if gaps := _gaps(use, floor):
        parts.append("Kỳ này: " + gaps)
    if gaps := _gaps(last_year, floor):
        parts.append("Cùng kỳ: " + gaps)
    return "; ".join(parts)


def _sheet(book: Workbook, title: str, heading: str, subject: str, columns: Sequence[str]) -> Worksheet:
    sheet: Worksheet = book.create_sheet(title)
    sheet["A1"] = heading
    sheet["A1"].font = Font(bold=True, size=13)
    sheet["A2"] = subject
    for i, name in enumerate(columns, start=1):
        cell = sheet.cell(HEADER_ROW, i, name)
        cell.font = _BOLD
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        sheet.column_dimensions[get_column_letter(i)].width = 14 if i > 2 else 28
    sheet.freeze_panes = f"C{HEADER_ROW + 1}"
    return sheet


def _row(
    sheet: Worksheet, row: int, values: Sequence[Any], formats: dict[int, str], flagged: bool = False
) -> None:
    for i, value in enumerate(values, start=1):
        cell = sheet.cell(row, i, value)
        if i in formats:
            cell.number_format = formats[i]
        if flagged:
            cell.fill = _FLAG


MONTHLY_HEADINGS = (
    "STT", "Đơn vị", "Loại đơn vị", "Điện năng tháng (kWh)", "Bình quân ngày (kWh/ngày)",
    "Bình quân ngày làm việc (kWh/ngày làm việc)", "Số ngày làm việc", "Cùng kỳ năm trước (kWh)",
    "Cùng kỳ: kWh/ngày làm việc", "Tăng (+) / giảm (-) so với cùng kỳ (%)",
    "Tăng (+) / giảm (-) theo ngày làm việc (%)", "Độ đầy đủ số liệu (%)", "Điện năng ước tính (kWh)", "Ghi chú",
)  # fmt: skip


def _monthly_sheet(book: Workbook, report: MonthlyReport) -> None:
    year, month = report.month.split("-")
    sheet = _sheet(
        book,
        SHEETS[0],
        f"BÁO CÁO TÌNH HÌNH SỬ DỤNG ĐIỆN THÁNG {month}/{year} SO VỚI CÙNG KỲ NĂM {int(year) - 1}",
        f"Tỉnh {report.province} - thực hiện Chỉ thị 20/CT-TTg (R3); số liệu từ công tơ, chu kỳ 15 phút",
        MONTHLY_HEADINGS,
    )
    formats = {
        4: _KWH,
        5: _KWH,
        6: _KWH,
        8: _KWH,
        9: _KWH,
        10: _PERCENT,
        11: _PERCENT,
        12: _PERCENT,
        13: _KWH,
    }
    for n, u in enumerate(report.units, start=1):
        _row(sheet, HEADER_ROW + n, _monthly_values(n, u, report.min_completeness), formats, u.increased)


def _monthly_values(n: int, u: UnitMonth, floor: float) -> list[Any]:
    return [
        n, u.name, CATEGORY_VI[u.category], u.use.kwh, u.use.kwh_per_day, u.use.kwh_per_working_day,
        u.use.working_days, u.last_year.kwh, u.last_year.kwh_per_working_day, u.change, u.change_per_working_day,
        u.use.completeness, u.use.estimated_kwh, _note(u.not_comparable, u.use, u.last_year, floor),
    ]  # fmt: skip


YTD_HEADINGS = (
    "STT", "Đơn vị", "Loại đơn vị", "Tiêu chí", "Lũy kế năm nay (kWh)", "Lũy kế cùng kỳ năm trước (kWh)",
    "Tiết kiệm so với cùng kỳ (%)", "Mục tiêu tiết kiệm (%)", "Đánh giá", "Tiết kiệm đã hiệu chỉnh thời tiết (%)",
    "Mô hình thời tiết CV(RMSE) (%)", "Độ đầy đủ số liệu (%)", "Ghi chú",
)  # fmt: skip


def _verdict(behind: bool, saving: float | None, target: float | None) -> str:
    if saving is None:
        return "Chưa đánh giá được"
    if target is None:
        return "Không có mục tiêu"
    return "Chưa đạt" if behind else "Đạt"


def _ytd_values(n: int, u: UnitYtd, floor: float) -> list[Any]:
    note = _note(u.not_comparable, u.use, u.last_year, floor)
    if u.below_large_user:
        note = "; ".join(filter(None, [note, "12 tháng gần nhất dưới 1 triệu kWh: R8 không áp dụng"]))
    if u.weather is not None and not u.weather.passes:
        note = "; ".join(filter(None, [note, "mô hình thời tiết không đạt ASHRAE Guideline 14"]))
    return [
        n, u.name, CATEGORY_VI[u.category], u.rule, u.use.kwh, u.last_year.kwh, u.saving, u.target,
        _verdict(u.behind, u.saving, u.target), u.weather.saving if u.weather else None,
        u.weather.cv_rmse if u.weather else None, u.use.completeness, note,
    ]  # fmt: skip


def _ytd_sheet(book: Workbook, report: YtdReport) -> None:
    sheet = _sheet(
        book,
        SHEETS[1],
        f"LŨY KẾ TIẾT KIỆM ĐIỆN TỪ ĐẦU NĂM ĐẾN HẾT THÁNG {report.through_month:02d}/{report.year} SO VỚI "
        f"CÙNG KỲ NĂM {report.year - 1}",
        f"Tỉnh {report.province}: cơ quan công sở ≥ 5 % (R1), chiếu sáng công cộng ≥ 30 % (R5), cơ sở ≥ 1 triệu "
        "kWh/năm ≥ 2 % (R8), toàn tỉnh ≥ 2 % (R2)",
        YTD_HEADINGS,
    )
    formats = {5: _KWH, 6: _KWH, 7: _PERCENT, 8: _PERCENT, 10: _PERCENT, 11: _PERCENT, 12: _PERCENT}
    for n, u in enumerate(report.units, start=1):
        _row(sheet, HEADER_ROW + n, _ytd_values(n, u, report.min_completeness), formats, u.behind)
    t = report.total
    left_out = f"không tính {len(t.left_out)} đơn vị không so sánh được" if t.left_out else ""
    _row(
        sheet,
        HEADER_ROW + len(report.units) + 1,
        ["", f"Toàn tỉnh ({t.units} đơn vị)", "", "R2", t.kwh, t.last_year_kwh, t.saving, t.target,
         _verdict(t.behind, t.saving, t.target), None, None, None, left_out],
        formats,
        t.behind,
    )  # fmt: skip
    for cell in sheet[HEADER_ROW + len(report.units) + 1]:
        cell.font = _BOLD


LOSS_HEADINGS = (
    "Đơn vị", "Công tơ tổng", "Công tơ nhánh", "Ngày", "Điện năng công tơ tổng (kWh)",
    "Tổng điện năng công tơ nhánh (kWh)", "Tổn thất (%)", "Ngưỡng (%)", "Ghi chú",
)  # fmt: skip


def _losses_sheet(book: Workbook, report: LossReport) -> None:
    year, month = report.month.split("-")
    sheet = _sheet(
        book,
        SHEETS[2],
        f"TỔN THẤT ĐIỆN NĂNG THÁNG {month}/{year} (R11)",
        "Tổn thất = (công tơ tổng - tổng công tơ nhánh) / công tơ tổng, theo ngày và cả tháng (các ngày đủ số liệu)",
        LOSS_HEADINGS,
    )
    formats = {5: _KWH, 6: _KWH, 7: _PERCENT, 8: _PERCENT}
    row = HEADER_ROW + 1
    for t in report.trees:
        subs = ", ".join(t.sub_meters)
        days = len(t.days)
        note = f"{t.complete_days}/{days} ngày đủ số liệu" + ("; vượt ngưỡng" if t.flagged else "")
        _row(sheet, row, [t.name, t.parent, subs, f"Tháng {month}/{year}", t.parent_kwh, t.sub_meters_kwh,
                          t.loss, t.target, note], formats, t.flagged)  # fmt: skip
        for cell in sheet[row]:
            cell.font = _BOLD
        row += 1
        for d in t.days:
            gap = "" if d.loss is not None else "thiếu số liệu"
            _row(sheet, row, [t.name, t.parent, subs, d.day, d.parent_kwh, d.sub_meters_kwh, d.loss, t.target, gap],
                 formats, d.loss is not None and d.loss > t.target)  # fmt: skip
            sheet.cell(row, 4).number_format = "dd/mm/yyyy"
            row += 1


NOTES = (
    "Số liệu: điện năng nhận từ công tơ, tổng hợp theo chu kỳ 15 phút; ngày theo giờ Việt Nam (UTC+7).",
    "Độ đầy đủ: tỷ lệ chu kỳ 15 phút có số liệu trên tổng số chu kỳ của kỳ báo cáo (mọi công tơ của đơn vị).",
    "Ước tính: chu kỳ thiếu của một công tơ được bù bằng bình quân các chu kỳ có số liệu cùng loại ngày "
    "(ngày làm việc / ngày nghỉ) trong tháng; tháng không có số liệu nào thì không ước tính.",
    "Kỳ có độ đầy đủ dưới {floor:.0%} (kỳ này hoặc cùng kỳ) không được so sánh; lý do ghi ở cột Ghi chú.",
    "Ngày làm việc theo lịch của từng đơn vị (ngày nghỉ lễ, Tết, ngày làm bù).",
    "Hiệu chỉnh thời tiết: mô hình kWh/ngày theo độ-ngày nóng và lạnh (gốc 18 °C) của năm trước, chỉ dùng khi đạt "
    "ASHRAE Guideline 14 (CV(RMSE) ≤ 15 %, |NMBE| ≤ 5 %).",
    "Ô tô đỏ: tăng so với cùng kỳ (R3), chưa đạt mục tiêu tiết kiệm (R1, R5, R8, R2) hoặc tổn thất vượt ngưỡng (R11).",
)


@dataclass(frozen=True)
class MonthReports:
    """What a month's workbook holds: R3 for the month, the year to date through it, its losses."""

    monthly: MonthlyReport
    ytd: YtdReport
    losses: LossReport

    def of_unit(self, unit: str) -> MonthReports:
        """Only `unit`'s rows (the province's total stays): what its manager is sent."""
        return MonthReports(
            self.monthly.model_copy(update={"units": [u for u in self.monthly.units if u.unit == unit]}),
            self.ytd.model_copy(update={"units": [u for u in self.ytd.units if u.unit == unit]}),
            self.losses.model_copy(update={"trees": [t for t in self.losses.trees if t.unit == unit]}),
        )


def month_reports(reader: LedgerReader, sites: Sites, year: int, month: int) -> MonthReports:
    """The reports of a month, with the weather-normalised savings if a temperature file is configured
    (:class:`TemperatureError` if it cannot be read)."""
    path = sites.reporting.temperature_file
    return MonthReports(
        figures.monthly(reader, sites, year, month),
        figures.ytd(reader, sites, year, month, load_temperatures(path) if path is not None else None),
        figures.losses(reader, sites, year, month),
    )


def workbook(reports: MonthReports) -> bytes:
    """A month's reports as one XLSX file."""
    monthly, ytd, losses = reports.monthly, reports.ytd, reports.losses
    book = Workbook()
    assert book.active is not None
    book.remove(book.active)
    _monthly_sheet(book, monthly)
    _ytd_sheet(book, ytd)
    _losses_sheet(book, losses)
    notes = book.create_sheet(SHEETS[3])
    notes["A1"] = "GHI CHÚ VỀ SỐ LIỆU"
    notes["A1"].font = Font(bold=True, size=13)
    for i, text in enumerate(NOTES, start=HEADER_ROW):
        notes.cell(i, 1, text.format(floor=monthly.min_completeness))
    notes.column_dimensions["A"].width = 120
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
