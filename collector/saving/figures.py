"""The Directive 20 figures, from each meter's daily energy (the ledger's 15-minute intervals summed by day).

A unit's use over a period is the sum of its meters'. Each month says how complete it is (intervals with
energy / intervals the month has, over the unit's meters) and what was estimated: a meter's missing
intervals of a working day are filled with the mean of its intervals of working days in that month, those
of other days with the mean of its other days' (or, lacking those, of all its intervals in the month). A
month in which a meter has no data at all cannot be estimated: its use is unknown.

A period is compared with the same period a year before only when both are at least
``reporting.min_completeness`` (90 %) complete; otherwise the report says why not.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from collector.calendars import SiteCalendar
from collector.detectors.config import LARGE_USER_KWH, Sites, UnitCategory, UnitConfig
from collector.saving.weather import Temperatures, WeatherModel, normalised_saving
from collector.store import DayEnergy, LedgerReader
from kilowatch.timebase import SLOTS_PER_DAY, day_number

Daily = dict[str, dict[int, DayEnergy]]
"""Per meter, its daily energy by local day number."""

RULES = {
    UnitCategory.PUBLIC_OFFICE: "R1",
    UnitCategory.PUBLIC_LIGHTING: "R5",
    UnitCategory.LARGE_USER: "R8",
    UnitCategory.OTHER: None,
}
"""The rule of domain.md each category's yearly saving answers."""


class NotComparable(StrEnum):
    """Why a period is not compared with the same period a year before."""

    NO_DATA = "no_data"
    NO_DATA_LAST_YEAR = "no_data_last_year"
    INCOMPLETE = "incomplete"
    INCOMPLETE_LAST_YEAR = "incomplete_last_year"


class Use(BaseModel):
    """A unit's (or a meter tree's) energy over a stretch of days."""

    first: date = Field(description="First day (Vietnam calendar)")
    last: date = Field(description="Last day, included")
    days: int
    working_days: int = Field(description="Days of the unit's working-day calendar")
    completeness: float = Field(
        description="Share of the period's 15-minute intervals (all meters) with energy"
    )
    measured_kwh: float = Field(description="Energy of the intervals with data")
    estimated_kwh: float | None = Field(
        description="Energy filled in for the intervals without (null: a meter has no data in a month)"
    )
    kwh: float | None = Field(description="measured_kwh + estimated_kwh; null when it cannot be estimated")
    kwh_per_day: float | None
    kwh_per_working_day: float | None


class UnitMonth(BaseModel):
    """R3: a unit's month against the same month last year."""

    unit: str
    name: str
    category: UnitCategory
    use: Use
    last_year: Use
    change: float | None = Field(description="kWh against last year's month, as a share (+0.05 = 5 % more)")
    change_per_working_day: float | None = Field(description="The same per working day")
    not_comparable: NotComparable | None = Field(description="Why there is no change, if there is none")
    increased: bool = Field(description="Flagged: the unit used more than a year before")


class MonthlyReport(BaseModel):
    province: str
    month: str = Field(description="YYYY-MM")
    min_completeness: float
    units: list[UnitMonth]


class WeatherNormalised(BaseModel):
    """A monthly model of kWh/day against degree days, fitted on last year's months."""

    months: int = Field(description="Months the model is fitted on")
    cv_rmse: float = Field(description="CV(RMSE) of the fit (ASHRAE Guideline 14: at most 0.15 monthly)")
    nmbe: float = Field(description="NMBE of the fit (at most 0.05 either way)")
    passes: bool = Field(description="Both within Guideline 14's limits: the normalised saving is given")
    expected_kwh: float | None = Field(description="What last year's model predicts for this year's weather")
    saving: float | None = Field(description="Weather-normalised saving: 1 - kWh / expected_kwh")


class UnitYtd(BaseModel):
    """R1 (public offices), R5 (public lighting), R8 (large users): the year so far against last year's."""

    unit: str
    name: str
    category: UnitCategory
    rule: str | None = Field(description="The rule of domain.md the target answers")
    target: float | None = Field(description="Yearly saving asked of the unit, as a share")
    use: Use
    last_year: Use
    saving: float | None = Field(description="1 - kWh / last year's kWh: positive is a saving")
    not_comparable: NotComparable | None
    behind: bool = Field(description="Flagged: the saving is below the target")
    below_large_user: bool = Field(
        description="A large user whose last 12 months' use is under 1 GWh, whom R8 does not bind"
    )
    weather: WeatherNormalised | None = Field(description="When a temperature source is configured")


class ProvinceYtd(BaseModel):
    """R2: the province's total over the units compared."""

    target: float
    units: int = Field(description="Units whose periods could be compared, and so are summed")
    left_out: list[str] = Field(description="Units that could not be compared (see their not_comparable)")
    kwh: float
    last_year_kwh: float
    saving: float | None
    behind: bool


class YtdReport(BaseModel):
    province: str
    year: int
    through_month: int = Field(description="The period is January to this month")
    min_completeness: float
    units: list[UnitYtd]
    total: ProvinceYtd


class DayLoss(BaseModel):
    day: date
    parent_kwh: float | None
    sub_meters_kwh: float | None
    loss: float | None = Field(
        description="(parent - sub-meters) / parent; null unless every meter is complete"
    )


class TreeLoss(BaseModel):
    """R11: a parent meter against the sum of its sub-meters."""

    unit: str
    name: str
    parent: str
    sub_meters: list[str]
    target: float
    days: list[DayLoss]
    complete_days: int = Field(description="Days on which every meter of the tree has all its intervals")
    parent_kwh: float = Field(description="Over the complete days")
    sub_meters_kwh: float
    loss: float | None = Field(description="The month's loss share over the complete days")
    flagged: bool = Field(description="loss above the unit's loss_target")


class LossReport(BaseModel):
    province: str
    month: str
    trees: list[TreeLoss]


def month_bounds(year: int, month: int) -> tuple[date, date]:
    """First and last day of a month."""
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def _days(first: date, last: date) -> Iterator[date]:
    d = first
    while d <= last:
        yield d
        d += timedelta(days=1)


def is_working_day(cal: SiteCalendar, d: date) -> bool:
    """A day the unit works: one of its occupancy days or a make-up day, and not closed."""
    return not cal.is_closed(d) and (d.weekday() in cal.occupancy.days or d in cal.working_days)


def load(reader: LedgerReader, meters: Iterable[str], first: date, last: date) -> Daily:
    """Each meter's daily energy from `first` to `last` (included)."""
    end = day_number(last) + 1
    return {m: {e.day: e for e in reader.daily_energy(m, day_number(first), end)} for m in meters}


def _month_use(cal: SiteCalendar, meters: Iterable[str], daily: Daily, first: date, last: date) -> Use:
    """`meters`' sum over days of one month, their gaps estimated."""
    days = list(_days(first, last))
    working = {day_number(d) for d in days if is_working_day(cal, d)}
    measured = estimated = 0.0
    present = expected = 0
    known = True
    for meter in meters:
        by_day = daily.get(meter, {})
        kwh = {True: 0.0, False: 0.0}
        got = {True: 0, False: 0}
        slots = {True: 0, False: 0}
        for d in days:
            n = day_number(d)
            kind = n in working
            slots[kind] += SLOTS_PER_DAY
            if (e := by_day.get(n)) is not None:
                kwh[kind] += e.energy_import_kwh
                got[kind] += e.intervals
        total_kwh, total_got = kwh[True] + kwh[False], got[True] + got[False]
        measured += total_kwh
        present += total_got
        expected += slots[True] + slots[False]
        for kind in (True, False):
            missing = slots[kind] - got[kind]
            if missing <= 0:
                continue
            if got[kind]:
                estimated += missing * kwh[kind] / got[kind]
            elif total_got:
                estimated += missing * total_kwh / total_got
            else:
                known = False
    total = measured + estimated if known else None
    return Use(
        first=first,
        last=last,
        days=len(days),
        working_days=len(working),
        completeness=present / expected if expected else 0.0,
        measured_kwh=measured,
        estimated_kwh=estimated if known else None,
        kwh=total,
        kwh_per_day=None if total is None else total / len(days),
        kwh_per_working_day=None if total is None or not working else total / len(working),
    )


def period_use(unit: UnitConfig, daily: Daily, first: date, last: date) -> Use:
    """The unit's use from `first` to `last`, estimated month by month."""
    months = []
    start = first
    while start <= last:
        _, month_end = month_bounds(start.year, start.month)
        end = min(month_end, last)
        months.append(_month_use(unit.calendar, unit.meters, daily, start, end))
        start = end + timedelta(days=1)
    return combine(months)


def combine(uses: list[Use]) -> Use:
    """Consecutive periods as one."""
    days = sum(u.days for u in uses)
    working = sum(u.working_days for u in uses)
    known = all(u.kwh is not None for u in uses)
    measured = sum(u.measured_kwh for u in uses)
    estimated = sum(u.estimated_kwh or 0.0 for u in uses) if known else None
    total = measured + estimated if estimated is not None else None
    return Use(
        first=uses[0].first,
        last=uses[-1].last,
        days=days,
        working_days=working,
        completeness=sum(u.completeness * u.days for u in uses) / days,
        measured_kwh=measured,
        estimated_kwh=estimated,
        kwh=total,
        kwh_per_day=None if total is None else total / days,
        kwh_per_working_day=None if total is None or not working else total / working,
    )


def why_not(use: Use, last_year: Use, min_completeness: float) -> NotComparable | None:
    """Why `use` is not compared with `last_year`, None when it is."""
    if last_year.kwh is None or last_year.measured_kwh == 0:
        return NotComparable.NO_DATA_LAST_YEAR
    if use.kwh is None or use.measured_kwh == 0:
        return NotComparable.NO_DATA
    if use.completeness < min_completeness:
        return NotComparable.INCOMPLETE
    if last_year.completeness < min_completeness:
        return NotComparable.INCOMPLETE_LAST_YEAR
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def monthly(reader: LedgerReader, sites: Sites, year: int, month: int) -> MonthlyReport:
    """R3 for every unit: the month against the same month a year before."""
    first, last = month_bounds(year, month)
    before_first, before_last = month_bounds(year - 1, month)
    floor = sites.reporting.min_completeness
    units = []
    for unit_id, unit in sites.units.items():
        daily = load(reader, unit.meters, before_first, last)
        use = period_use(unit, daily, first, last)
        before = period_use(unit, daily, before_first, before_last)
        reason = why_not(use, before, floor)
        ratio = None if reason else _ratio(use.kwh, before.kwh)
        per_working = None if reason else _ratio(use.kwh_per_working_day, before.kwh_per_working_day)
        change = None if ratio is None else ratio - 1
        units.append(
            UnitMonth(
                unit=unit_id,
                name=unit.name,
                category=unit.category,
                use=use,
                last_year=before,
                change=change,
                change_per_working_day=None if per_working is None else per_working - 1,
                not_comparable=reason,
                increased=change is not None and change > 0,
            )
        )
    return MonthlyReport(
        province=sites.reporting.province,
        month=f"{year:04d}-{month:02d}",
        min_completeness=floor,
        units=units,
    )


def ytd(
    reader: LedgerReader, sites: Sites, year: int, through: int, temperatures: Temperatures | None = None
) -> YtdReport:
    """R1/R5/R8 per unit and R2 for the province: January to `through` of `year` against the same months
    of the year before; with `temperatures`, the weather-normalised saving where the model passes."""
    first, last = date(year, 1, 1), month_bounds(year, through)[1]
    before_first, before_last = date(year - 1, 1, 1), month_bounds(year - 1, through)[1]
    floor = sites.reporting.min_completeness
    units: list[UnitYtd] = []
    for unit_id, unit in sites.units.items():
        daily = load(reader, unit.meters, before_first, last)
        use = period_use(unit, daily, first, last)
        before = period_use(unit, daily, before_first, before_last)
        reason = why_not(use, before, floor)
        ratio = None if reason else _ratio(use.kwh, before.kwh)
        saving = None if ratio is None else 1 - ratio
        target = unit.target
        twelve = period_use(unit, daily, last - timedelta(days=364), last)
        weather = None
        if temperatures is not None:
            baseline = [period_use(unit, daily, *month_bounds(year - 1, m)) for m in range(1, 13)]
            current = [period_use(unit, daily, *month_bounds(year, m)) for m in range(1, through + 1)]
            weather = _weather(baseline, current, temperatures, floor)
        units.append(
            UnitYtd(
                unit=unit_id,
                name=unit.name,
                category=unit.category,
                rule=RULES[unit.category],
                target=target,
                use=use,
                last_year=before,
                saving=saving,
                not_comparable=reason,
                behind=saving is not None and target is not None and saving < target,
                below_large_user=unit.category is UnitCategory.LARGE_USER
                and twelve.kwh is not None
                and twelve.kwh < LARGE_USER_KWH,
                weather=weather,
            )
        )
    counted = [u for u in units if u.not_comparable is None]
    kwh = sum(u.use.kwh or 0.0 for u in counted)
    before_kwh = sum(u.last_year.kwh or 0.0 for u in counted)
    saving = 1 - kwh / before_kwh if before_kwh else None
    target = sites.reporting.province_target
    return YtdReport(
        province=sites.reporting.province,
        year=year,
        through_month=through,
        min_completeness=floor,
        units=units,
        total=ProvinceYtd(
            target=target,
            units=len(counted),
            left_out=[u.unit for u in units if u.not_comparable is not None],
            kwh=kwh,
            last_year_kwh=before_kwh,
            saving=saving,
            behind=saving is not None and saving < target,
        ),
    )


def _weather(
    baseline: list[Use], current: list[Use], temperatures: Temperatures, floor: float
) -> WeatherNormalised | None:
    """Last year's complete months fit the model; this year's months (all complete) are judged by it."""
    fit_on = [u for u in baseline if u.kwh is not None and u.completeness >= floor]
    model = WeatherModel.fit(fit_on, temperatures)
    if model is None:
        return None
    expected = actual = None
    if model.passes and all(u.kwh is not None and u.completeness >= floor for u in current):
        expected, actual = normalised_saving(model, current, temperatures)
    return WeatherNormalised(
        months=len(fit_on),
        cv_rmse=model.cv_rmse,
        nmbe=model.nmbe,
        passes=model.passes,
        expected_kwh=expected,
        saving=None if expected is None or actual is None or expected == 0 else 1 - actual / expected,
    )


def losses(reader: LedgerReader, sites: Sites, year: int, month: int) -> LossReport:
    """R11 for every meter tree of every unit, per day and over the month's complete days."""
    first, last = month_bounds(year, month)
    trees = []
    for unit_id, unit in sites.units.items():
        for parent, children in unit.sub_meters.items():
            daily = load(reader, [parent, *children], first, last)
            days, parent_total, sub_total, complete = [], 0.0, 0.0, 0
            for d in _days(first, last):
                n = day_number(d)
                p = daily[parent].get(n)
                subs = [daily[c].get(n) for c in children]
                whole = (
                    p is not None
                    and p.intervals == SLOTS_PER_DAY
                    and all(s is not None and s.intervals == SLOTS_PER_DAY for s in subs)
                )
                sub_kwh = sum(s.energy_import_kwh for s in subs if s is not None)
                parent_kwh = p.energy_import_kwh if p is not None else None
                if whole and parent_kwh:
                    complete += 1
                    parent_total += parent_kwh
                    sub_total += sub_kwh
                days.append(
                    DayLoss(
                        day=d,
                        parent_kwh=parent_kwh,
                        sub_meters_kwh=sub_kwh if any(s is not None for s in subs) else None,
                        loss=(parent_kwh - sub_kwh) / parent_kwh if whole and parent_kwh else None,
                    )
                )
            loss = (parent_total - sub_total) / parent_total if parent_total else None
            trees.append(
                TreeLoss(
                    unit=unit_id,
                    name=unit.name,
                    parent=parent,
                    sub_meters=list(children),
                    target=unit.loss_target,
                    days=days,
                    complete_days=complete,
                    parent_kwh=parent_total,
                    sub_meters_kwh=sub_total,
                    loss=loss,
                    flagged=loss is not None and loss > unit.loss_target,
                )
            )
    return LossReport(province=sites.reporting.province, month=f"{year:04d}-{month:02d}", trees=trees)
