"""A simulated meter's numbers obey the physics, its counters integrate power, and its clock maps time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from kilowatch.quantities import QUANTITIES
from sim.clock import SimClock
from sim.load_model import Demand, Grid, instants
from sim.loads.office import building_meter
from sim.meter import MAX_INTEGRATION_STEPS, SimulatedMeter, electrical_values
from sim.scenario import Resolution

MONDAY_0600_LOCAL = datetime(2025, 3, 2, 23, 0, tzinfo=UTC)


def meter_of(unit: int, seed: int, *, epoch: datetime, update_interval: float = 1.0) -> SimulatedMeter:
    """A meter of `kilowatch sim serve --profile`'s building, as the server builds it."""
    return SimulatedMeter(
        building_meter(seed, unit), key=f"{seed}/unit-{unit}", supply=f"{seed}/building",
        epoch=epoch, update_interval=update_interval,
    )  # fmt: skip


class FakeMonotonic:
    """Real seconds that a test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_quantity_of_the_vocabulary_is_served_and_finite() -> None:
    values = meter_of(1, 1, epoch=MONDAY_0600_LOCAL).read(MONDAY_0600_LOCAL)
    assert set(values) == set(QUANTITIES)
    assert all(math.isfinite(v) for v in values.values())


@pytest.mark.parametrize("unit", [1, 3])
def test_values_are_electrically_consistent_through_a_week(unit: int) -> None:
    meter = meter_of(unit, 4, epoch=MONDAY_0600_LOCAL, update_interval=600)
    for minutes in range(0, 7 * 24 * 60, 30):
        v = meter.read(MONDAY_0600_LOCAL + timedelta(minutes=minutes))
        for ph in ("l1", "l2", "l3"):
            p, q, s = v[f"active_power_{ph}_w"], v[f"reactive_power_{ph}_var"], v[f"apparent_power_{ph}_va"]
            pf, volts, amps = v[f"power_factor_{ph}"], v[f"voltage_{ph}_v"], v[f"current_{ph}_a"]
            assert p == pytest.approx(volts * amps * pf, rel=1e-9)
            assert s == pytest.approx(volts * amps, rel=1e-9)
            assert s**2 == pytest.approx(p**2 + q**2, rel=1e-9)
            assert q == pytest.approx(p * math.tan(math.acos(pf)), rel=1e-9)
            assert 0.85 <= pf <= 0.98  # 0.955 for IT load alone at night, plus noise of 0.005 per sigma
            assert 209 < volts < 231
        total_p = sum(v[f"active_power_{ph}_w"] for ph in ("l1", "l2", "l3"))
        total_q = sum(v[f"reactive_power_{ph}_var"] for ph in ("l1", "l2", "l3"))
        assert v["active_power_w"] == pytest.approx(total_p, rel=1e-9)
        assert v["reactive_power_var"] == pytest.approx(total_q, rel=1e-9)
        assert v["apparent_power_va"] ** 2 == pytest.approx(total_p**2 + total_q**2, rel=1e-9)
        assert v["power_factor"] == pytest.approx(total_p / v["apparent_power_va"], rel=1e-9)
        for pair, a, b in (("l1_l2", "l1", "l2"), ("l2_l3", "l2", "l3"), ("l3_l1", "l3", "l1")):
            assert v[f"voltage_{pair}_v"] == pytest.approx(
                math.sqrt(3) * (v[f"voltage_{a}_v"] + v[f"voltage_{b}_v"]) / 2, rel=0.01
            )
        assert v["current_n_a"] < 0.25 * max(v[f"current_{ph}_a"] for ph in ("l1", "l2", "l3"))
        assert 49.9 < v["frequency_hz"] < 50.1


def test_neutral_current_is_the_phasor_sum_of_the_phase_currents() -> None:
    supply = Grid(voltages_v=np.full((3, 1), 220.0), frequency_hz=np.array([50.0]))
    balanced = Demand(active_w=np.full((3, 1), 2200.0), power_factor=np.full((3, 1), 0.9))
    assert electrical_values(balanced, supply)["current_n_a"][0] == pytest.approx(0.0, abs=1e-9)
    one_phase = Demand(
        active_w=np.array([[2200.0], [0.0], [0.0]]), power_factor=np.array([[1.0], [0.9], [0.9]])
    )
    values = electrical_values(one_phase, supply)
    assert values["current_n_a"][0] == pytest.approx(10.0)
    assert values["current_l1_a"][0] == pytest.approx(10.0)
    assert values["voltage_l1_l2_v"][0] == pytest.approx(220.0 * math.sqrt(3))


def test_energy_counters_integrate_power_over_a_simulated_hour_at_speed() -> None:
    fake = FakeMonotonic()
    clock = SimClock(MONDAY_0600_LOCAL + timedelta(hours=1), speed=60, monotonic=fake)
    meter = meter_of(2, 9, epoch=clock.start, update_interval=1.0)
    first = meter.read(clock.now())
    for _ in range(120):  # 07:00-08:00 local across the morning ramp: 0.5 s real = 30 s simulated
        fake.now += 0.5
        meter.read(clock.now())
    last = meter.read(clock.now())
    assert clock.now() - clock.start == timedelta(hours=1)
    # The meter's own rule: the power shown in each one-second window, held for that second.
    shown = building_meter(9, 2).demand(instants(*(clock.start + timedelta(seconds=s) for s in range(3600))))
    expected_kwh = shown.total_active_w.sum() / 3_600_000
    expected_kvarh = shown.reactive_var.sum() / 3_600_000
    assert last["energy_import_kwh"] - first["energy_import_kwh"] == pytest.approx(expected_kwh, rel=1e-9)
    delta_kvarh = last["reactive_energy_import_kvarh"] - first["reactive_energy_import_kvarh"]
    assert delta_kvarh == pytest.approx(expected_kvarh, rel=1e-9)
    # And physically: close to the trapezoid integral of the power curve sampled once a minute.
    minutes = (
        building_meter(9, 2)
        .demand(instants(*(clock.start + timedelta(minutes=m) for m in range(61))))
        .total_active_w.tolist()
    )
    trapezoid_kwh = (sum(minutes) - (minutes[0] + minutes[-1]) / 2) / 60 / 1000
    assert last["energy_import_kwh"] - first["energy_import_kwh"] == pytest.approx(trapezoid_kwh, rel=0.02)
    assert expected_kwh > 1.0  # a sub-meter entering office hours uses kilowatt-hours, not crumbs
    assert last["energy_export_kwh"] == first["energy_export_kwh"]  # a building without generation


def test_counters_never_decrease_even_after_a_long_pause_at_high_speed() -> None:
    meter = meter_of(1, 2, epoch=MONDAY_0600_LOCAL, update_interval=1.0)
    previous = meter.read(MONDAY_0600_LOCAL)["energy_import_kwh"]
    offsets = [0.2, 5, 5.4, 3, 900, 901, 86_400, 86_400 + 10, 60]  # includes steps back in time
    for seconds in offsets:
        now = meter.read(MONDAY_0600_LOCAL + timedelta(seconds=seconds))["energy_import_kwh"]
        assert now >= previous
        previous = now


def test_a_long_pause_is_integrated_in_strides_that_stay_close_to_the_power_curve() -> None:
    meter = meter_of(1, 2, epoch=MONDAY_0600_LOCAL, update_interval=1.0)
    start = meter.read(MONDAY_0600_LOCAL)["energy_import_kwh"]
    day = 86_400
    assert day > 10 * MAX_INTEGRATION_STEPS  # so this read integrates in strides, not second by second
    used_kwh = meter.read(MONDAY_0600_LOCAL + timedelta(seconds=day))["energy_import_kwh"] - start
    every_minute = instants(*(MONDAY_0600_LOCAL + timedelta(minutes=m) for m in range(24 * 60 + 1)))
    minutes = building_meter(2, 1).demand(every_minute).total_active_w.tolist()
    trapezoid_kwh = (sum(minutes) - (minutes[0] + minutes[-1]) / 2) / 60 / 1000
    assert used_kwh == pytest.approx(trapezoid_kwh, rel=0.02)
    assert 200 < used_kwh < 1_000  # a 40-80 kW office building on a working day


def test_values_hold_for_the_whole_update_window() -> None:
    meter = meter_of(1, 1, epoch=MONDAY_0600_LOCAL, update_interval=10.0)
    window = [meter.read(MONDAY_0600_LOCAL + timedelta(seconds=s)) for s in (20.0, 25.5, 29.999)]
    assert window[0] == window[1] == window[2]
    following = meter.read(MONDAY_0600_LOCAL + timedelta(seconds=30.0))
    assert following["active_power_w"] != window[0]["active_power_w"]
    assert following["energy_import_kwh"] > window[0]["energy_import_kwh"]


def test_counters_start_plausible_and_seeded() -> None:
    def start_kwh(seed: int, unit: int) -> float:
        return meter_of(unit, seed, epoch=MONDAY_0600_LOCAL).read(MONDAY_0600_LOCAL)["energy_import_kwh"]

    assert start_kwh(5, 1) == start_kwh(5, 1)
    assert start_kwh(5, 1) != start_kwh(6, 1)
    assert all(1_000 < start_kwh(seed, unit) < 1_000_000 for seed in range(3) for unit in (1, 2, 7))


def test_clock_runs_at_its_speed_from_its_start() -> None:
    fake = FakeMonotonic()
    start = datetime(2025, 3, 3, 7, 30, tzinfo=UTC)
    clock = SimClock(start, speed=120, monotonic=fake)
    assert clock.now() == start
    fake.now += 30
    assert clock.now() == start + timedelta(hours=1)
    assert clock.now().tzinfo is UTC


def test_clock_takes_any_timezone_and_refuses_naive_times_and_bad_speeds() -> None:
    hanoi = datetime.fromisoformat("2025-03-03T14:00:00+07:00")
    assert SimClock(hanoi).start == datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
    assert abs(SimClock().start - datetime.now(UTC)) < timedelta(minutes=1)
    with pytest.raises(ValueError, match="no timezone"):
        SimClock(datetime(2025, 3, 3, 7, 0))
    with pytest.raises(ValueError, match="speed"):
        SimClock(hanoi, speed=0)


def test_a_meter_of_coarse_resolution_shows_whole_watts_and_whole_counter_steps() -> None:
    coarse = SimulatedMeter(
        building_meter(3, 1), key="3/unit-1", supply="3/building", epoch=MONDAY_0600_LOCAL,
        resolution=Resolution(power_w=1, energy_kwh=0.001),
    )  # fmt: skip
    exact = meter_of(1, 3, epoch=MONDAY_0600_LOCAL)
    for minute in range(0, 600, 7):
        at = MONDAY_0600_LOCAL + timedelta(minutes=minute)
        shown, true = coarse.read(at), exact.read(at)
        assert shown["active_power_w"] == round(true["active_power_w"])
        assert shown["energy_import_kwh"] == pytest.approx(
            math.floor(true["energy_import_kwh"] * 1000) / 1000
        )
        assert shown["voltage_l1_v"] == true["voltage_l1_v"]
