"""The Directive 20 reports (:mod:`collector.saving`) for the units of the sites file: R3 a month against the
same month last year, R1/R5/R8/R2 the year to date against targets, R11 losses; as JSON or CSV, and the
three of a month as the Department's XLSX workbook."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse

from collector.api.deps import Context, Now, Reader, every_site
from collector.api.problems import NotFound, Unprocessable, problem
from collector.detectors.config import Sites
from collector.saving import export, figures
from collector.saving.weather import TemperatureError, load_temperatures
from kilowatch.timebase import VIETNAM_TZ

CSV = "text/csv; charset=utf-8"

router = APIRouter(
    prefix="/api/v1/reports",
    tags=["reports"],
    dependencies=[Depends(every_site)],
    responses={401: problem("No valid credentials"), 403: problem("A key or user scoped to some sites")},
)

Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (Vietnam calendar)")]
Format = Annotated[Literal["json", "csv"], Query(description="json, or csv: one row per unit, tree or day")]
_NO_UNITS = problem("No units: the sites file has none, or detection (which loads it) is off")


def _units(context: Context) -> Sites:
    if context.sites is None or not context.sites.units:
        raise NotFound("no units: add `units` to the sites file (detection.sites in collector.yaml)")
    return context.sites


def _month(month: str) -> tuple[int, int]:
    year, number = month.split("-")
    return int(year), int(number)


def _csv(text: str, name: str) -> Response:
    return PlainTextResponse(
        text, media_type=CSV, headers={"Content-Disposition": f'attachment; filename="{name}.csv"'}
    )


_CSV_RESPONSE = {"content": {CSV: {}}, "description": "The report (format=csv: as CSV)"}


@router.get("/monthly", response_model=figures.MonthlyReport, responses={200: _CSV_RESPONSE, 404: _NO_UNITS})
def monthly(
    month: Month, context: Context, reader: Reader, format: Format = "json"
) -> figures.MonthlyReport | Response:
    """R3: each unit's month (kWh, per day, per working day) against the same month last year, with how
    complete each is, what was estimated, and why a month is not compared."""
    report = figures.monthly(reader, _units(context), *_month(month))
    return _csv(export.monthly_csv(report), f"r3-{month}") if format == "csv" else report


@router.get(
    "/ytd",
    response_model=figures.YtdReport,
    responses={200: _CSV_RESPONSE, 404: _NO_UNITS, 422: problem("No month of the year has ended")},
)
def year_to_date(
    year: Annotated[int, Query(ge=2000, le=2100, description="The calendar year")],
    context: Context,
    reader: Reader,
    now: Now,
    through: Annotated[
        int | None,
        Query(ge=1, le=12, description="Last month of the period; default: the last that has ended"),
    ] = None,
    format: Format = "json",
) -> figures.YtdReport | Response:
    """R1/R5/R8: each unit's saving from January against the same months last year and its target (flagged
    when behind), with a weather-normalised saving where the model passes ASHRAE Guideline 14; R2: the
    province's total."""
    sites = _units(context)
    today = now.astimezone(VIETNAM_TZ).date()
    if through is None:
        if year > today.year or (year == today.year and today.month == 1):
            raise Unprocessable(f"no month of {year} has ended yet")
        through = 12 if year < today.year else today.month - 1
    path = sites.reporting.temperature_file
    try:
        temperatures = load_temperatures(path) if path is not None else None
    except TemperatureError as exc:
        raise Unprocessable(f"the temperature file: {exc}") from exc
    report = figures.ytd(reader, sites, year, through, temperatures)
    return _csv(export.ytd_csv(report), f"ytd-{year}-{through:02d}") if format == "csv" else report


@router.get("/losses", response_model=figures.LossReport, responses={200: _CSV_RESPONSE, 404: _NO_UNITS})
def losses(
    month: Month, context: Context, reader: Reader, format: Format = "json"
) -> figures.LossReport | Response:
    """R11: each meter tree's (parent - sub-meters) / parent per day and over the month, flagged above the
    unit's target."""
    report = figures.losses(reader, _units(context), *_month(month))
    return _csv(export.losses_csv(report), f"r11-{month}") if format == "csv" else report


@router.get(
    "/workbook",
    response_class=Response,
    responses={200: {"content": {export.XLSX: {}}, "description": "The XLSX workbook"}, 404: _NO_UNITS},
)
def workbook(month: Month, context: Context, reader: Reader) -> Response:
    """The month's reports as the Department's workbook: R3, the year to date through the month, R11, and
    notes on the data (Vietnamese headings)."""
    year, number = _month(month)
    try:
        content = export.workbook(export.month_reports(reader, _units(context), year, number))
    except TemperatureError as exc:
        raise Unprocessable(f"the temperature file: {exc}") from exc
    return Response(
        content,
        media_type=export.XLSX,
        headers={"Content-Disposition": f'attachment; filename="bao-cao-{month}.xlsx"'},
    )
