"""Each detector on small hand-made series: it fires, clears, ignores benign variation, is suppressed
by a gap, and says the same on a backlog (shuffled arrival) as live."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from collector.calendars import SiteCalendar
from collector.detectors import advertising, after_hours, data_quality, idle, lighting, peak
from collector.detectors.common import Context
from collector.detectors.config import MeterConfig, Role, SiteConfig
from collector.detectors.findings import Detector, Finding
from collector.detectors.run import detect_meter
from collector.detectors.series import Sample, Series
from kilowatch.calendars import WeeklyHours, window
from kilowatch.timebase import VIETNAM_TZ

MINUTE = 60_000


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return round(datetime(year, month, day, hour, minute, tzinfo=VIETNAM_TZ).timestamp() * 1000)


def hour(t: int) -> float:
    local = datetime.fromtimestamp(t / 1000, VIETNAM_TZ)
    return local.hour + local.minute / 60


def series(
    kw: Callable[[int], float | None], start: int, end: int, *, energy: Callable[[int], float] | None = None
) -> Series:
    """One reading a minute over [start, end); None: the meter did not answer."""
    samples = [
        Sample(t, w, energy(t) if energy else None)
        for t in range(start, end, MINUTE)
        if (w := kw(t)) is not None
    ]
    return Series.of("s.m", samples, poll_ms=MINUTE, start_ms=start, end_ms=end)


def context(
    role: Role, rated_kw: float, *, large: bool = False, calendar: SiteCalendar | None = None
) -> Context:
    site = SiteConfig(calendar=calendar or SiteCalendar())
    return Context("s", "s.m", MeterConfig(role=role, rated_kw=rated_kw, large=large), site)


def office(t: int, waste: tuple[int, int] | None = None, overtime: bool = False, flat: bool = False) -> float:
    """10 kW in office hours, 1 kW base at night, plus optional waste, or an evening of overtime until
    21:30 that ramps down as people leave (or, `flat`, stays at 6 kW: load left running)."""
    h = hour(t)
    weekday = datetime.fromtimestamp(t / 1000, VIETNAM_TZ).weekday()
    kw = 10.0 if weekday < 5 and (7.5 <= h < 11.5 or 13 <= h < 17) else 1.0 + 0.02 * ((t // MINUTE) % 5)
    if (overtime or flat) and weekday < 5 and 17 <= h < 21.5:
        kw = 6.0 if flat else 1.0 + 6.0 * (21.5 - h) / 4.5
    if waste and waste[0] <= t < waste[1]:
        kw += 5.0
    return kw


START = ms(2025, 6, 2)  # a Monday
WASTE = (ms(2025, 6, 4, 22, 0), ms(2025, 6, 4, 23, 30))  # Wednesday night
END = ms(2025, 6, 5, 6, 0)


def test_after_hours_fires_and_clears() -> None:
    findings = after_hours.detect(context(Role.SUB_METER, 12), series(lambda t: office(t, WASTE), START, END))
    assert [(f.start_ms, f.end_ms, f.detected_at) for f in findings] == [
        (WASTE[0], WASTE[1], WASTE[0] + 60 * MINUTE)
    ]
    f = findings[0]
    assert f.detector is Detector.AFTER_HOURS
    assert 7.0 < f.wasted_kwh < 8.0
    assert f.cost_vnd > 0
    assert "kWh" in f.message_en
    assert "lãng phí" in f.message_vi


def test_after_hours_ignores_overtime_that_ramps_down_and_the_lunch_break() -> None:
    s = series(lambda t: office(t, overtime=True), START, END)
    assert after_hours.detect(context(Role.SUB_METER, 12), s) == []


def test_a_flat_evening_load_is_waste_unless_the_site_declares_overtime() -> None:
    s = series(lambda t: office(t, flat=True), START, END)
    findings = after_hours.detect(context(Role.SUB_METER, 12), s)
    # Each working evening: an hour's grace for a late end of day, then an hour flat before the alert.
    assert [(hour(f.start_ms), hour(f.detected_at), hour(f.end_ms or END)) for f in findings] == [
        (18.0, 19.0, 21.5)
    ] * 3
    declared = SiteCalendar(permitted=WeeklyHours(windows=(window("17:00", "22:00"),)))
    assert after_hours.detect(context(Role.SUB_METER, 12, calendar=declared), s) == []


def test_a_gap_suppresses_after_hours() -> None:
    gap = (WASTE[0] + 20 * MINUTE, WASTE[0] + 70 * MINUTE)
    s = series(lambda t: None if gap[0] <= t < gap[1] else office(t, WASTE), START, END)
    findings = after_hours.detect(context(Role.SUB_METER, 12), s)
    assert all(not (f.start_ms < gap[1] and gap[0] < (f.end_ms or END)) for f in findings)


def test_backlog_and_live_give_the_same_findings() -> None:
    def kw(t: int) -> float:
        return office(t, WASTE)

    ctx = context(Role.SUB_METER, 12)
    live = detect_meter(ctx, series(kw, START, END))
    samples = [Sample(t, kw(t)) for t in range(START, END, MINUTE)]
    random.Random(6).shuffle(samples)
    backlog = detect_meter(
        ctx, Series.of("s.m", samples + samples[:500], poll_ms=MINUTE, start_ms=START, end_ms=END)
    )
    assert backlog == live
    # Live, in the middle of the waste: the same episode, still open.
    so_far = detect_meter(ctx, series(kw, START, WASTE[0] + 75 * MINUTE))
    assert [(f.start_ms, f.end_ms, f.detected_at) for f in so_far if f.detector is Detector.AFTER_HOURS] == [
        (WASTE[0], None, WASTE[0] + 60 * MINUTE)
    ]


def machine(t: int, idle_spells: list[tuple[int, int]], loaded: tuple[float, float] = (6.0, 14.0)) -> float:
    """A 10 kW machine loaded at 8 kW in a 06:00-14:00 shift, idle at 1.5 kW in `idle_spells`."""
    if any(a <= t < b for a, b in idle_spells):
        return 1.5
    return 8.0 if loaded[0] <= hour(t) < loaded[1] else 0.05


SHIFTS = SiteCalendar(occupancy=WeeklyHours(days=(0, 1, 2, 3, 4, 5), windows=(window("06:00", "14:00"),)))


def test_idle_needs_twenty_minutes_in_a_shift_and_ten_outside() -> None:
    short = (ms(2025, 6, 2, 8, 0), ms(2025, 6, 2, 8, 12))  # between jobs: normal
    long = (ms(2025, 6, 2, 10, 0), ms(2025, 6, 2, 10, 25))
    night = (ms(2025, 6, 2, 22, 0), ms(2025, 6, 2, 22, 12))
    s = series(lambda t: machine(t, [short, long, night]), ms(2025, 6, 2), ms(2025, 6, 3))
    findings = idle.detect(context(Role.MACHINE, 10, calendar=SHIFTS), s)
    assert [(f.start_ms, f.end_ms, f.detected_at) for f in findings] == [
        (long[0], long[1], long[0] + 20 * MINUTE),
        (night[0], night[1], night[0] + 10 * MINUTE),
    ]


def test_idle_across_a_shift_end_is_judged_by_the_time_on_each_side() -> None:
    straddling = (ms(2025, 6, 2, 13, 56), ms(2025, 6, 2, 14, 14))  # 4 min in the shift, 14 after it
    in_shift = (ms(2025, 6, 3, 11, 0), ms(2025, 6, 3, 11, 18))  # 18 min, all in the shift
    s = series(lambda t: machine(t, [straddling, in_shift]), ms(2025, 6, 2), ms(2025, 6, 4))
    findings = idle.detect(context(Role.MACHINE, 10, calendar=SHIFTS), s)
    # 4/20 of the allowance in the shift, 8 more minutes outside use the rest (4/20 + 8/10 = 1).
    assert [(f.start_ms, f.end_ms, f.detected_at) for f in findings] == [
        (straddling[0], straddling[1], straddling[0] + 12 * MINUTE)
    ]


def test_idle_survives_drift_and_noise() -> None:
    drifting = lambda t: 8.0 * (0.85 + 0.3 * ((t // MINUTE) % 97) / 97) if 6 <= hour(t) < 14 else 0.05  # noqa: E731
    s = series(drifting, ms(2025, 6, 2), ms(2025, 6, 3))
    assert idle.detect(context(Role.MACHINE, 10, calendar=SHIFTS), s) == []


def test_large_machine_loaded_in_the_peak_band() -> None:
    s = series(lambda t: machine(t, [], loaded=(16.5, 17.3)), ms(2025, 6, 2), ms(2025, 6, 3))
    findings = peak.detect(context(Role.MACHINE, 10, large=True), s)
    rules = [(f.rule, f.start_ms, f.end_ms) for f in findings]
    assert rules == [("large_machine_in_peak", ms(2025, 6, 2, 17, 0), ms(2025, 6, 2, 17, 18))]


def test_peak_overuse_against_recent_days() -> None:
    extra = (ms(2025, 6, 5, 17, 0), ms(2025, 6, 5, 18, 0))
    kw = lambda t: (10.0 if 17 <= hour(t) < 20 else 2.0) + (6.0 if extra[0] <= t < extra[1] else 0.0)  # noqa: E731
    findings = peak.detect(context(Role.SUB_METER, 20), series(kw, START, END + 86_400_000))
    assert [(f.rule, f.start_ms, f.end_ms) for f in findings] == [("overuse", extra[0], extra[1])]


def cabinet(t: int, wrong: tuple[int, int] | None = None, late_min: int = 0) -> float:
    """6 kW lamps lit 19:00+late .. 04:30, optionally forced the other way in `wrong`."""
    h = hour(t)
    lit = h >= 19 + late_min / 60 or h < 4.5
    if wrong and wrong[0] <= t < wrong[1]:
        lit = not lit
    return 6.0 if lit else 0.015


def test_lighting_ignores_switch_offsets_and_flags_off_schedule() -> None:
    ctx = context(Role.LIGHTING_CABINET, 6)
    calm = series(lambda t: cabinet(t, late_min=12), START, END)
    assert lighting.detect(ctx, calm) == []
    by_day = (ms(2025, 6, 3, 8, 0), ms(2025, 6, 3, 12, 0))
    dark = (ms(2025, 6, 3, 20, 0), ms(2025, 6, 3, 22, 0))
    s = series(lambda t: cabinet(t, by_day if t < dark[0] else dark), START, END)
    assert [(f.rule, f.start_ms, f.end_ms) for f in lighting.detect(ctx, s)] == [
        ("on_by_day", by_day[0], by_day[1]),
        ("dark_at_night", dark[0], dark[1]),
    ]


def sign(t: int, cut: bool) -> float:
    h = hour(t)
    if not 18 <= h < 23:
        return 0.01
    return 4.0 * (0.45 if cut and h < 20 else 1.0)


def test_advertising_must_cut_in_the_evening_peak_but_not_on_sunday() -> None:
    ctx = context(Role.ADVERTISING, 4)
    assert advertising.detect(ctx, series(lambda t: sign(t, True), START, END)) == []
    uncut = advertising.detect(ctx, series(lambda t: sign(t, False), ms(2025, 6, 7), ms(2025, 6, 9)))
    assert [(f.start_ms, f.end_ms) for f in uncut] == [(ms(2025, 6, 7, 18, 0), ms(2025, 6, 7, 20, 0))]


def test_data_quality_silence_frozen_and_counter_reset() -> None:
    silent = (ms(2025, 6, 2, 10, 0), ms(2025, 6, 2, 10, 10))
    frozen = (ms(2025, 6, 2, 12, 0), ms(2025, 6, 2, 12, 30))
    reset = ms(2025, 6, 2, 15, 0)

    def kw(t: int) -> float | None:
        if silent[0] <= t < silent[1]:
            return None
        return 2.0 if frozen[0] <= t < frozen[1] else 2.0 + (t // MINUTE) % 7 / 100

    def energy(t: int) -> float:
        if frozen[0] <= t < frozen[1]:
            t = frozen[0]
        return (t - reset) / 1_800_000 if t >= reset else 100 + (t - START) / 1_800_000

    s = series(kw, START, ms(2025, 6, 3), energy=energy)
    findings = data_quality.detect(context(Role.SUB_METER, 5), s)
    assert [(f.rule, f.start_ms, f.end_ms) for f in findings] == [
        ("no_data", silent[0], silent[1]),
        ("frozen", frozen[0], frozen[1]),
        ("counter_reset", reset - MINUTE, reset + MINUTE),
    ]


def test_a_meter_gone_silent_at_the_end_is_still_silent() -> None:
    end = ms(2025, 6, 2, 12, 0)
    s = series(lambda t: 1.0 + (t // MINUTE) % 3 / 10 if t < end - 30 * MINUTE else None, START, end)
    findings: list[Finding] = data_quality.detect(context(Role.SUB_METER, 5), s)
    assert [(f.rule, f.start_ms, f.end_ms) for f in findings] == [("no_data", end - 30 * MINUTE, None)]


def test_peak_overuse_ignores_overtime_and_late_departures_below_the_load_before_the_band() -> None:
    """Evening overtime (6 kW until 21:30) and a late departure (10 kW until 18:00) on days whose recent
    history shows neither: the load never rises above what the office drew just before the band."""

    def kw(t: int) -> float:
        day = datetime.fromtimestamp(t / 1000, VIETNAM_TZ).day
        h = hour(t)
        if day == 5 and 17 <= h < 18:
            return 10.0
        return office(t, overtime=day in (4, 6))

    findings = peak.detect(context(Role.SUB_METER, 12), series(kw, START, END + 86_400_000))
    assert findings == []


def ramping_office(t: int, *, end: float = 17.0, extra: tuple[int, int] | None = None) -> float:
    """10 kW on weekdays until `end`, ramping down to 1 kW over half an hour (-0.3 kW a minute); plus 3 kW
    switched on over `extra`."""
    h = hour(t)
    weekday = datetime.fromtimestamp(t / 1000, VIETNAM_TZ).weekday()
    kw = 1.0 + 0.02 * ((t // MINUTE) % 5)
    if weekday < 5 and h >= 7.5:
        kw = max(kw, 10.0 - max(0.0, h - end) * 18.0)
    return kw + (3.0 if extra and extra[0] <= t < extra[1] else 0.0)


def test_peak_overuse_finds_load_switched_on_as_the_day_ramps_down() -> None:
    """3 kW switched on at 17:00 hides in the ramp-down (the quarter hour is below the one before), but the
    minute data show the switch: found until it is switched off. A day ending 45 minutes late ramps the
    same way without a switch: not overuse."""
    extra = (ms(2025, 6, 12, 17, 0), ms(2025, 6, 12, 19, 0))  # a Thursday, after a week and a half of history

    def kw(t: int) -> float:
        late = ms(2025, 6, 13) <= t < ms(2025, 6, 14)
        return ramping_office(t, end=17.75 if late else 17.0, extra=extra)

    findings = peak.detect(context(Role.SUB_METER, 12), series(kw, START, ms(2025, 6, 14)))
    assert [(f.rule, f.start_ms, f.end_ms) for f in findings] == [("overuse", extra[0], extra[1])]


def test_peak_overuse_ignores_a_job_resuming_on_a_plant_main_meter() -> None:
    """A plant's main meter carries its machines: 80 kW through the morning band, with a 30 kW job that
    pauses for a quarter hour every day. One Thursday the morning's lights add 4 kW and the job pauses
    longer, deeper, and resumes at 10:08: a larger switch than on the comparable days that leaves the
    circuit only 5 % above them, back at its usual draw plus the lights. Not overuse."""
    odd = ms(2025, 6, 12)

    def kw(t: int) -> float:
        h, weekday = hour(t), datetime.fromtimestamp(t / 1000, VIETNAM_TZ).weekday()
        noise = 0.02 * ((t // MINUTE) % 5)
        if weekday >= 5 or not 7.5 <= h < 17:
            return 5.0 + noise
        if odd <= t < odd + 86_400_000:
            return (45.0 if 10 <= h < 10 + 8 / 60 else 84.0) + noise
        return (50.0 if 9.75 <= h < 10 else 80.0) + noise

    s = series(kw, START, ms(2025, 6, 13))
    assert peak.detect(context(Role.OFFICE_MAIN, 20), s) == []


def test_peak_overuse_after_a_holiday_week_keeps_the_working_days_scale() -> None:
    """A circuit rated far below what it carries (20 kW by day, rated 2), back from the 30/4 - 1/5
    holidays: it lingers at 20-21 kW past 17:00 (a late departure on a warm day). The minimum excess is
    a share of its usual working-day high, not of the holiday week's base load."""

    def kw(t: int) -> float:
        local = datetime.fromtimestamp(t / 1000, VIETNAM_TZ)
        h = hour(t)
        closed = local.weekday() >= 5 or (local.month, local.day) in ((4, 30), (5, 1))
        if closed or h < 7.5:
            return 1.0 + 0.02 * ((t // MINUTE) % 5)
        late = (local.month, local.day) == (5, 7)
        end = 17.75 if late else 17.0
        if late and 16.75 <= h < end:
            return 20.0 + (h - 16.75)
        return max(1.0, 20.0 - max(0.0, h - end) * 38.0)

    s = series(kw, ms(2025, 4, 21), ms(2025, 5, 8))
    assert peak.detect(context(Role.OFFICE_MAIN, 2), s) == []


def test_peak_overuse_ignores_the_morning_rise_without_history() -> None:
    """On the first day the morning peak band draws more than the hour before it (cooling warms up):
    with no comparable day an occupied band is not judged."""
    rising = lambda t: 4.0 + 2.0 * max(0.0, hour(t) - 8) if 7.5 <= hour(t) < 11.5 else 1.0  # noqa: E731
    assert peak.detect(context(Role.SUB_METER, 12), series(rising, START, START + 86_400_000)) == []


def test_a_demand_limit_is_warned_of_before_it_is_passed_and_clears_with_hysteresis() -> None:
    day = (2025, 6, 3)  # a Tuesday
    phases = [  # (from local time, kW): 30-minute demand windows on the clock, limit 100 kW
        ((9, 0), 80.0),  # demand 80: nothing
        ((10, 0), 92.0),  # predicted 92 >= 90 %: warning
        ((10, 15), 110.0),  # (92 x 15 + 110 x 15) / 30 = 101 >= 100 %: alarm
        ((10, 30), 70.0),  # a new window at 70 < 85 %: both clear
        ((11, 0), 88.0),  # between clear and warn: stays quiet
        ((11, 30), 91.0),  # warning again ...
        ((11, 40), 86.0),  # ... held above 85 % (hysteresis), across the next window too
        ((12, 30), 60.0),  # cleared
    ]
    starts = [ms(*day, h, m) for (h, m), _ in phases]

    def load(t: int) -> float:
        return next(
            kw for start, (_, kw) in zip(reversed(starts), reversed(phases), strict=True) if t >= start
        )

    ctx = Context("s", "s.m", MeterConfig(role=Role.MACHINE, rated_kw=150, demand_limit_kw=100), SiteConfig())
    found = peak.detect(ctx, series(load, ms(*day, 9), ms(*day, 13)))
    demand = [(f.rule, f.start_ms, f.end_ms, f.magnitude) for f in found if f.rule.startswith("demand")]
    assert demand == [
        ("demand_warning", ms(*day, 10), ms(*day, 10, 30), 101.0),
        ("demand_warning", ms(*day, 11, 30), ms(*day, 12, 30), 91.0),
        ("demand_exceeded", ms(*day, 10, 15), ms(*day, 10, 30), 101.0),
    ]
    assert all(f.message_en and f.message_vi for f in found)
    no_limit = Context("s", "s.m", MeterConfig(role=Role.MACHINE, rated_kw=150), SiteConfig())
    assert not [
        f for f in peak.detect(no_limit, series(load, ms(*day, 9), ms(*day, 13))) if "demand" in f.rule
    ]


def test_predicted_demand_counts_the_window_so_far_and_the_load_now() -> None:
    minute = MINUTE
    ts = [0, minute, 2 * minute, 3 * minute]  # a 2-minute window, then the next
    assert peak.predicted_demand(ts, [10.0, 30.0, 5.0, 5.0], minute, 2 * minute) == [10.0, 20.0, 5.0, 5.0]
