"""The office load model: shape of the Vietnamese office day, per-unit scale, determinism, supply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import mean

import pytest

from sim.load_model import (
    VIETNAM_TZ,
    demand,
    grid,
    interpolate,
    is_working_day,
    office_levels,
    unit_load,
)

MONDAY = datetime(2025, 3, 3, tzinfo=VIETNAM_TZ)  # a Monday, local midnight
SATURDAY = MONDAY + timedelta(days=5)


def at(day: datetime, hour: float) -> datetime:
    return (day + timedelta(hours=hour)).astimezone(UTC)


def mean_power(hour: float, *, unit: int = 1, seed: int = 1, days: range = range(5)) -> float:
    """Average total power at local `hour` over several days, so the comparison is about shape, not noise."""
    return mean(demand(at(MONDAY + timedelta(days=d), hour), seed, unit).active_w for d in days)


def test_same_seed_same_load_other_seed_other_load() -> None:
    t = at(MONDAY, 10.25)
    assert demand(t, 7, 2) == demand(t, 7, 2)
    assert grid(t, 7, 2) == grid(t, 7, 2)
    assert demand(t, 7, 2) != demand(t, 8, 2)
    assert demand(t, 7, 2) != demand(t, 7, 3)


def test_office_hours_follow_vietnam_local_time() -> None:
    # 07:30-11:30 and 13:00-17:00 local (UTC+7): full lights; nobody before 06:45 or on Saturday.
    for hour in (7.5, 9.0, 11.5, 13.0, 15.0, 17.0):
        assert office_levels(at(MONDAY, hour))[0] == 1.0, hour
    assert office_levels(at(MONDAY, 6.5)) == (0.0, 0.0)
    assert office_levels(at(MONDAY, 23.0)) == (0.0, 0.0)
    assert office_levels(at(SATURDAY, 10.0)) == (0.0, 0.0)
    # 00:30 UTC is 07:30 in Hanoi: the same instant, whatever zone it is written in.
    assert office_levels(datetime(2025, 3, 3, 0, 30, tzinfo=UTC))[0] == 1.0
    assert is_working_day(at(MONDAY + timedelta(days=4), 12))
    assert not is_working_day(at(SATURDAY, 12))


def test_occupied_hours_draw_far_more_than_nights_and_weekends() -> None:
    for unit in (1, 2, 5):
        night = mean_power(2.0, unit=unit)
        afternoon = mean_power(14.5, unit=unit)
        weekend_afternoon = mean(
            demand(at(SATURDAY + timedelta(days=d), 14.5), 1, unit).active_w for d in (0, 1)
        )
        assert afternoon > 3 * night, unit
        assert weekend_afternoon < 1.3 * night, unit
        assert night > 0.08 * unit_load(1, unit).peak_w  # servers and fridges never sleep


def test_ramps_lunch_dip_and_hotter_afternoon() -> None:
    night, morning, afternoon = mean_power(3.0), mean_power(9.0), mean_power(15.0)
    assert night < mean_power(7.25) < morning  # ramping up around the start of work
    assert night < mean_power(17.25) < afternoon  # and down around its end
    assert mean_power(12.25) < 0.8 * min(morning, afternoon)  # lunch break: lights off, AC turned down
    assert afternoon > 1.05 * morning  # air conditioning works harder in the afternoon heat


def test_main_meter_is_larger_than_sub_meters() -> None:
    for seed in range(5):
        main = unit_load(seed, 1)
        assert 40_000 <= main.peak_w <= 80_000
        assert all(unit_load(seed, unit).peak_w < main.peak_w / 2 for unit in range(2, 12))


def test_phases_slightly_unbalanced_and_power_factor_plausible() -> None:
    for hour in (2.0, 9.0, 12.25, 15.0, 20.0):
        load = demand(at(MONDAY, hour), 3, 1)
        shares = [p.active_w / load.active_w for p in load.phases]
        assert all(0.29 < s < 0.38 for s in shares), shares
        assert max(shares) - min(shares) > 0.001  # never perfectly balanced
        assert all(0.85 <= p.power_factor <= 0.97 for p in load.phases)
    assert min(p.power_factor for p in demand(at(MONDAY, 15.0), 3, 1).phases) < min(
        p.power_factor for p in demand(at(MONDAY, 2.0), 3, 1).phases
    )  # compressor motors lower the power factor when the air conditioning runs


def test_supply_near_220_v_50_hz_and_shared_by_one_building() -> None:
    for hour in range(24):
        supply = grid(at(MONDAY, hour), 1, 1)
        assert all(209 < v < 231 for v in supply.voltages_v)  # EVN's +-5 % around 220 V
        assert 49.9 < supply.frequency_hz < 50.1
        other_meter = grid(at(MONDAY, hour), 1, 2)
        assert all(abs(a - b) < 2.5 for a, b in zip(supply.voltages_v, other_meter.voltages_v, strict=True))


@pytest.mark.parametrize(
    ("hour", "level"), [(0.0, 0.0), (7.5, 1.0), (7.125, 0.5), (11.625, 0.65), (23.99, 0.0)]
)
def test_curves_interpolate_between_knots(hour: float, level: float) -> None:
    curve = ((0.0, 0.0), (6.75, 0.0), (7.5, 1.0), (11.5, 1.0), (11.75, 0.3), (24.0, 0.0))
    assert interpolate(curve, hour) == pytest.approx(level, abs=1e-3)
