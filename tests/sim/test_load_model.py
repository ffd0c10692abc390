"""The load models: the Vietnamese office day and its benign variation, street lighting, advertising,
machines; determinism; consistency of the per-phase split."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from statistics import mean

import numpy as np
import pytest

from kilowatch.calendars import is_public_holiday
from kilowatch.timebase import VIETNAM_TZ
from sim.calendar import in_peak_band, is_workday
from sim.load_model import Times, combine, grid, instants, interpolate
from sim.loads import Load, Mode
from sim.loads.advertising import AdvertisingSchedule, advertising
from sim.loads.machine import ShiftSchedule, State, machine
from sim.loads.office import OfficeSchedule, building_meter, office, office_day
from sim.loads.street_lighting import LightingSchedule, SwitchMode, night, street_lighting
from sim.weather import hot_spell

MONDAY = datetime(2025, 7, 7, tzinfo=VIETNAM_TZ)  # a Monday in the hot season, local midnight


def when(day: datetime, hour: float) -> datetime:
    return (day + timedelta(hours=hour)).astimezone(UTC)


def at(day: datetime, hour: float) -> Times:
    """One instant, as the models take it."""
    return instants(when(day, hour))


def watts(load: Load, t: Times, mode: Mode | None = None) -> float:
    return float(load.demand(t, mode).total_active_w[0])


def test_same_seed_same_load_other_seed_other_load() -> None:
    t = at(MONDAY, 10.25)
    assert watts(building_meter(7, 2), t) == watts(building_meter(7, 2), t)
    assert np.array_equal(grid(t, "a", "m").voltages_v, grid(t, "a", "m").voltages_v)
    assert watts(building_meter(7, 2), t) != watts(building_meter(8, 2), t)
    assert watts(building_meter(7, 2), t) != watts(building_meter(7, 3), t)


def test_an_instant_alone_gives_what_a_day_at_once_gives() -> None:
    """`serve` evaluates one window at a time, `generate` a week at once: the numbers must agree."""
    day = instants(*(when(MONDAY, m / 60) for m in range(0, 24 * 60, 7)))
    loads: list[Load] = [
        office(3, "site", "main", 60_000),
        street_lighting(1, "cab", 6_000, LightingSchedule()),
        advertising(1, "sign", 4_000, AdvertisingSchedule()),
        machine(2, "press", 100_000, ShiftSchedule(), avoids_peak=True),
    ]
    for load in loads:
        together = load.demand(day)
        for i in range(0, len(day), 37):
            alone = load.demand(day[i : i + 1])
            assert np.array_equal(alone.active_w[:, 0], together.active_w[:, i])
            assert np.array_equal(alone.power_factor[:, 0], together.power_factor[:, i])


def test_office_is_busy_in_office_hours_and_closed_on_sundays_and_tet() -> None:
    building = office(3, "site", "main", 60_000)
    weekdays = [
        MONDAY + timedelta(days=d) for d in range(5) if is_workday((MONDAY + timedelta(days=d)).date())
    ]
    night = mean(watts(building, at(d, 2.0)) for d in weekdays)
    morning = mean(watts(building, at(d, 9.5)) for d in weekdays)
    afternoon = mean(watts(building, at(d, 15.0)) for d in weekdays)
    assert morning > 2.5 * night
    assert afternoon > morning
    sunday = MONDAY + timedelta(days=6)
    assert watts(building, at(sunday, 10)) < 1.3 * night
    tet = datetime(2025, 1, 29, tzinfo=VIETNAM_TZ)  # Wednesday, first day of the lunar new year
    assert is_public_holiday(tet.date())
    assert not is_workday(tet.date())
    lights, cooling, _ = building.levels(at(tet, 10))
    assert (lights[0], cooling[0]) == (0.0, 0.0)


def test_a_holiday_is_closed_unless_the_site_works_its_morning() -> None:
    """30/4 closed; declared worked, its morning is worked like a Saturday's and ramps down by 12:00."""
    holiday = date(2025, 4, 30)
    closed = building_meter(5, 1)
    worked = office(
        5, "site", "lights", 20_000, ("lights",), OfficeSchedule(holidays_worked=frozenset({holiday}))
    )
    assert office_day(5, "site", closed.schedule, holiday).spans == ()
    plan = office_day(5, "site", worked.schedule, holiday)
    assert plan.spans == (("holiday_work", 7.0, 12.0),)
    day = datetime(2025, 4, 30, tzinfo=VIETNAM_TZ)
    lights = [float(worked.levels(at(day, h))[0][0]) for h in (6.5, 9.0, 11.75, 14.0)]
    assert (lights[0], lights[1], lights[3]) == (0.0, 0.45, 0.0)
    assert 0.0 < lights[2] < 0.45  # ramping down as they leave


def test_the_end_of_day_wanders_and_overtime_and_saturday_work_are_labelled() -> None:
    days = [date(2025, 7, 7) + timedelta(days=d) for d in range(120)]
    plans = [office_day(5, "site", building_meter(5, 1).schedule, d) for d in days]
    kinds = {kind for plan in plans for kind, _, _ in plan.spans}
    assert kinds == {"late_departure", "overtime", "saturday_work"}
    ends = {max(h for h, level in plan.lights if level == 1.0) for plan in plans if len(plan.lights) > 6}
    assert max(ends) - min(ends) > 0.75  # by most of an hour
    lunch_levels = {
        float(interpolate(plan.lights, np.array([12.25]))[0]) for plan in plans if len(plan.lights) > 6
    }
    assert max(lunch_levels) - min(lunch_levels) > 0.2  # lunch dips of varying depth
    building = office(5, "site", "ac", 40_000, ("cooling",))
    spells = [d for d in days if hot_spell(5, d)]
    assert spells, "a summer without a hot spell"
    assert all(any(s.kind == "hot_spell" for s in building.spans(d)) for d in spells)
    assert all(0.10 <= spell.raise_fraction <= 0.25 for d in spells if (spell := hot_spell(5, d)))


def test_street_lights_follow_their_window_dim_and_switch_a_few_minutes_off_schedule() -> None:
    fixed = street_lighting(1, "cab", 6_000, LightingSchedule())
    assert watts(fixed, at(MONDAY, 21)) > 5_000
    assert watts(fixed, at(MONDAY, 12)) < 50  # only the controller by day
    assert watts(fixed, at(MONDAY, 25.5)) < 0.6 * watts(fixed, at(MONDAY, 21))  # dimmed
    on, off = night(1, "cab", fixed.schedule, MONDAY.date())
    assert abs(on - when(MONDAY, 19)) <= timedelta(minutes=5)
    assert abs(off - when(MONDAY, 28.5)) <= timedelta(minutes=5)
    astro = street_lighting(1, "cab", 6_000, LightingSchedule(mode=SwitchMode.ASTRONOMICAL))
    on, _ = night(1, "cab", astro.schedule, MONDAY.date())
    assert when(MONDAY, 18.3) < on < when(MONDAY, 19.0)  # July sunset in Lạng Sơn is about 18:40
    assert {s.kind for s in astro.spans(MONDAY.date())} >= {"switch_offset"}
    assert watts(astro, at(MONDAY, 12), Mode.ON) > 5_000  # forced on by an anomaly


def test_advertising_is_cut_in_the_evening_peak_when_the_site_complies() -> None:
    sign = advertising(1, "sign", 4_000, AdvertisingSchedule())
    full = watts(sign, at(MONDAY, 21))
    assert in_peak_band(at(MONDAY, 19))[0]
    assert watts(sign, at(MONDAY, 19)) <= 0.5 * full
    assert watts(sign, at(MONDAY, 19), Mode.UNCUT) > 0.9 * full
    assert watts(sign, at(MONDAY, 12)) < 20
    rogue = advertising(1, "sign", 4_000, AdvertisingSchedule(complies=False))
    assert watts(rogue, at(MONDAY, 19)) > 0.9 * full
    assert [s.kind for s in rogue.spans(MONDAY.date())] == ["ad_not_cut"]


def test_machines_run_shifts_idle_with_poor_power_factor_and_drift() -> None:
    press = machine(2, "press", 100_000, ShiftSchedule(), avoids_peak=True)
    states = set(press.state(instants(*(when(MONDAY, h / 4) for h in range(6 * 4, 22 * 4)))).tolist())
    assert states == {State.OFF, State.IDLE, State.LOADED}
    assert press.state(at(MONDAY, 3))[0] == State.OFF
    assert all(press.state(at(MONDAY, h))[0] == State.OFF for h in (10, 18))  # kept out of the peak bands
    idle = press.demand(at(MONDAY, 3), Mode.IDLE)
    loaded = press.demand(at(MONDAY, 3), Mode.LOADED)
    assert idle.power_factor[0, 0] < 0.35 < 0.8 < loaded.power_factor[0, 0]
    assert 0.1 * 100_000 < idle.total_active_w[0] < 0.25 * 100_000 < 0.6 * 100_000 < loaded.total_active_w[0]
    drifts = press.drift(instants(*(when(MONDAY, 24 * d) for d in range(0, 120, 7))))
    assert max(drifts) - min(drifts) > 0.05


def test_combining_circuits_adds_power_per_phase() -> None:
    t = at(MONDAY, 15)
    a, b = office(1, "s", "a", 20_000).demand(t), machine(1, "m", 30_000, ShiftSchedule(), False).demand(t)
    both = combine([a, b], 1.02)
    assert both.total_active_w[0] == pytest.approx(1.02 * (a.total_active_w[0] + b.total_active_w[0]))
    assert both.reactive_var.sum() == pytest.approx(1.02 * (a.reactive_var.sum() + b.reactive_var.sum()))
