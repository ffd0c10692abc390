"""A Vietnamese public office: base load, lights and plug loads following the people, air conditioning
following the people and the heat.

Each day differs the way real offices do: the end of the day wanders by up to an hour, the lunch dip is
deeper or shallower, some evenings have permitted overtime (which ramps down as people leave one by
one), some Saturday mornings are worked, public holidays (Tết included) and Sundays are closed (but for
a holiday the site declares it works, a morning like a Saturday's), and hot spells raise air
conditioning for days. The day's plan is shared by every meter of one site (one
building keeps one timetable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cache

import numpy as np

from kilowatch import calendars
from kilowatch.calendars import hours, is_public_holiday
from kilowatch.timebase import VIETNAM_TZ
from sim.load_model import (
    Curve,
    Demand,
    Floats,
    PhaseShares,
    Times,
    interpolate,
    local_days,
    local_hour,
    phase_shares,
    seeded_rng,
    slow_noise,
    split,
)
from sim.loads import Category, Mode, Span
from sim.weather import hot_spell, outdoor_temperature

Window = tuple[float, float]
"""(from, to) in local hours."""

_MORNING, _AFTERNOON = hours(calendars.OFFICE_HOURS.windows)
OFFICE_HOURS: tuple[Window, Window] = (_MORNING, _AFTERNOON)
"""Vietnamese public offices' hours (:data:`kilowatch.calendars.OFFICE_HOURS`), Monday to Friday."""

_POWER_FACTORS = (0.955, 0.93, 0.86)
"""Base (IT with PFC supplies), lights and plugs (LED drivers, PCs), cooling (compressor motors)."""

PARTS = ("base", "lights", "cooling")

_STANDBY_SHARE = 0.003
"""What a circuit without base load still draws at night (air-conditioner controllers, LED drivers), so
no metered circuit ever reads exactly zero watts."""


@dataclass(frozen=True)
class OfficeSchedule:
    hours: tuple[Window, Window] = OFFICE_HOURS
    saturday_work: float = 0.15
    """Chance that a Saturday morning is worked (with permission)."""
    overtime: float = 0.2
    """Chance that a working day has an evening of permitted overtime."""
    holidays_worked: frozenset[date] = frozenset()
    """Public holidays whose morning the site works with permission (and declares as working days)."""


@dataclass(frozen=True)
class OfficeDay:
    """One day's plan of a building: how much of the lights and cooling are on, hour by hour."""

    lights: Curve
    cooling: Curve
    spans: tuple[tuple[str, float, float], ...] = field(default=())
    """(kind, from hour, to hour) of the day's benign variation."""


_CLOSED = OfficeDay(lights=((0.0, 0.0), (24.0, 0.0)), cooling=((0.0, 0.0), (24.0, 0.0)))


def _morning(start: float, end: float, kind: str) -> OfficeDay:
    """A morning worked with permission from `start` to `end` by part of the staff, ramping down over
    half an hour as they leave; labelled `kind`."""
    return OfficeDay(
        lights=((0.0, 0.0), (start - 0.5, 0.0), (start, 0.45), (end, 0.45), (end + 0.5, 0.0), (24.0, 0.0)),
        cooling=((0.0, 0.0), (start - 0.25, 0.0), (start + 0.25, 0.35), (end, 0.35), (end + 0.5, 0.0), (24.0, 0.0)),
        spans=((kind, start - 0.5, end + 0.5),),
    )  # fmt: skip


@cache
def office_day(seed: int, site: str, schedule: OfficeSchedule, day: date) -> OfficeDay:
    """The plan of `day` at `site`: closed, a morning worked (a Saturday's, or a declared holiday's), or a
    working day with its own end and lunch."""
    rng = seeded_rng("office-day", seed, site, day.isoformat())
    (a1, b1), (a2, b2) = schedule.hours
    if is_public_holiday(day):
        return _morning(a1, b1, "holiday_work") if day in schedule.holidays_worked else _CLOSED
    if day.weekday() == 6:
        return _CLOSED
    if day.weekday() == 5:
        return _CLOSED if rng.random() >= schedule.saturday_work else _morning(a1, b1, "saturday_work")
    shift = rng.triangular(-0.25, 1.0, 0.0)  # the end of day wanders, later more often than earlier
    dip = rng.uniform(0.5, 0.85)  # lunch: lights off in most rooms, some stay
    end = b2 + shift
    overtime = rng.random() < schedule.overtime
    late = min(end + rng.uniform(1.5, 3.5), 21.5) if overtime else end + 1.5
    lights: Curve = (
        (0.0, 0.0), (a1 - 0.75, 0.0), (a1, 1.0), (b1, 1.0), (b1 + 0.25, 1 - dip), (a2 - 0.25, 1 - dip),
        (a2, 1.0), (end, 1.0), (end + 0.5, 0.35 if overtime else 0.3), (late, 0.1 if overtime else 0.08),
        (late + 0.5, 0.0), (24.0, 0.0),
    )  # fmt: skip
    cooling: Curve = (
        (0.0, 0.0), (a1 - 0.5, 0.0), (a1 + 0.25, 0.6), (b1, 0.8), (b1 + 0.25, 0.8 - 0.6 * dip),
        (a2 - 0.25, 0.8 - 0.6 * dip), (a2, 0.9), (a2 + 1.5, 1.0), (end - 0.5, 1.0), (end, 0.9),
        (end + 0.5, 0.4 if overtime else 0.1), (late, 0.05 if overtime else 0.0), (late + 0.25, 0.0),
        (24.0, 0.0),
    )  # fmt: skip
    spans = []
    if shift > 0.5:
        spans.append(("late_departure", b2, end + 0.5))
    if overtime:
        spans.append(("overtime", end + 0.5, late + 0.5))
    return OfficeDay(lights=lights, cooling=cooling, spans=tuple(spans))


def cooling_need(celsius: Floats) -> Floats:
    """How hard air conditioning works at an outdoor temperature: nothing below 20 °C, full near 32 °C."""
    result: Floats = np.clip((celsius - 20.0) / 12.0, 0.0, 1.2)
    return result


@dataclass(frozen=True)
class Office:
    """One meter in an office building: a main meter or a sub-meter carrying some of the parts."""

    seed: int
    site: str
    meter: str
    base_w: float
    lights_w: float
    cooling_w: float
    shares: PhaseShares
    schedule: OfficeSchedule = OfficeSchedule()
    modes: frozenset[Mode] = frozenset()

    @property
    def rated_w(self) -> float:
        return self.base_w + self.lights_w + self.cooling_w

    def levels(self, ms: Times) -> tuple[Floats, Floats, Floats]:
        """(lights and plugs, cooling) share in use at each instant before noise and weather, and the
        day's hot-spell raise of cooling."""
        hour = local_hour(ms)
        lights, cooling, spells = np.empty(len(ms)), np.empty(len(ms)), np.zeros(len(ms))
        for day, part in local_days(ms):
            plan = office_day(self.seed, self.site, self.schedule, day)
            lights[part] = interpolate(plan.lights, hour[part])
            cooling[part] = interpolate(plan.cooling, hour[part])
            spell = hot_spell(self.seed, day)
            spells[part] = spell.raise_fraction if spell else 0.0
        return lights, cooling, spells

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        key = (self.seed, self.site, self.meter)
        lights, cooling, spells = self.levels(ms)
        if self.cooling_w and cooling.any():
            cooling *= cooling_need(outdoor_temperature(ms, self.seed)) * (1 + spells)
        base, people, weather = slow_noise(ms, 3, *key)
        parts = (
            self.base_w * (1 + 0.05 * base),
            self.lights_w * lights * (1 + 0.10 * people),
            self.cooling_w * cooling * (1 + 0.10 * weather),
        )
        return split(ms, list(zip(parts, _POWER_FACTORS, strict=True)), self.shares, *key)

    def spans(self, day: date) -> list[Span]:
        if not (self.lights_w or self.cooling_w):
            return []  # a base-load circuit (servers, security) does not follow the people
        midnight = datetime.combine(day, time(), VIETNAM_TZ)
        spans = [
            Span(kind, Category.BENIGN, midnight + timedelta(hours=a), midnight + timedelta(hours=b),
                 round((self.lights_w * 0.3 + self.cooling_w * 0.3) / 1000, 2), "kW")
            for kind, a, b in office_day(self.seed, self.site, self.schedule, day).spans
        ]  # fmt: skip
        spell = hot_spell(self.seed, day)
        if spell and self.cooling_w:
            spans.append(
                Span("hot_spell", Category.BENIGN, midnight, midnight + timedelta(days=1),
                     spell.raise_fraction, "fraction")
            )  # fmt: skip
        return spans


def office(
    seed: int,
    site: str,
    meter: str,
    rated_w: float,
    parts: tuple[str, ...] = PARTS,
    schedule: OfficeSchedule = OfficeSchedule(),
) -> Office:
    """An office circuit of `rated_w` at full use, carrying `parts`; its split between them is seeded."""
    rng = seeded_rng("office", seed, site, meter)
    weights = {"base": rng.uniform(0.12, 0.20), "lights": rng.uniform(0.25, 0.35)}
    weights["cooling"] = 1.0 - weights["base"] - weights["lights"]
    carried = sum(weights[p] for p in parts)
    watts = {p: rated_w * weights[p] / carried if p in parts else 0.0 for p in PARTS}
    watts["base"] = max(watts["base"], _STANDBY_SHARE * rated_w)
    return Office(
        seed, site, meter, watts["base"], watts["lights"], watts["cooling"],
        phase_shares(seed, site, meter), schedule,
    )  # fmt: skip


def building_meter(seed: int, unit: int) -> Office:
    """The meters of `kilowatch sim serve --profile`: unit 1 a building's main meter, the others sub-meters."""
    rng = seeded_rng("unit", seed, unit)
    rated_w = rng.uniform(40_000, 80_000) if unit == 1 else rng.uniform(6_000, 20_000)
    return office(seed, "building", f"unit-{unit}", rated_w)
