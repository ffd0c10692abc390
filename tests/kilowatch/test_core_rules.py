"""The rules agent, simulator and collector share (kilowatch.timebase, .calendars, .counters, .clock)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime

import numpy as np
import pytest

from agent.health import CounterReset, MeterStats
from agent.poller import Poll
from collector.detectors.common import Context
from collector.detectors.config import MeterConfig, Role, SiteConfig
from collector.detectors.data_quality import detect
from collector.detectors.series import Sample, Series
from collector.intervals import CounterSample, CounterStep
from kilowatch.calendars import (
    CIRCULAR_16_2014,
    DECISION_963_2026,
    OFFICE_HOURS,
    Band,
    hours,
    in_force,
    is_public_holiday,
)
from kilowatch.clock import redate
from kilowatch.counters import COUNTER_TOLERANCE, went_backwards
from kilowatch.mqtt_contract import ClockState, Quality, Reading
from kilowatch.timebase import (
    SLOT_MS,
    VIETNAM_TZ,
    bucket_start,
    day_number,
    day_start_ms,
    local_datetime,
    local_day,
    slot_of_day,
    to_ms,
    utc_datetime,
)

MINUTE = 60_000


def test_ms_and_datetimes_convert_exactly_both_ways() -> None:
    moment = datetime(2026, 2, 17, 9, 30, 0, 123000, tzinfo=VIETNAM_TZ)
    ms = to_ms(moment)
    assert ms == round(moment.timestamp() * 1000)
    assert (utc_datetime(ms), utc_datetime(ms).tzinfo) == (moment, UTC)
    assert (local_datetime(ms).hour, local_datetime(ms).tzinfo) == (9, VIETNAM_TZ)


def test_slots_and_local_days_follow_vietnamese_time() -> None:
    midnight = to_ms(datetime(2026, 2, 17, tzinfo=VIETNAM_TZ))
    assert day_start_ms(local_day(midnight + 5 * SLOT_MS)) == midnight
    assert day_number(date(2026, 2, 17)) == local_day(midnight)
    assert slot_of_day(midnight + 38 * SLOT_MS + 1) == 38
    assert bucket_start(midnight + 38 * SLOT_MS + 14 * MINUTE) == midnight + 38 * SLOT_MS


def test_tet_and_the_tou_calendar_in_force() -> None:
    assert is_public_holiday(date(2026, 2, 17))  # Tết
    assert not is_public_holiday(date(2026, 2, 24))
    both = (DECISION_963_2026, CIRCULAR_16_2014)
    assert in_force(both, date(2026, 4, 30)) is CIRCULAR_16_2014
    assert in_force(both, date(2026, 5, 1)) is DECISION_963_2026
    assert in_force(both, date(2010, 1, 1)) is CIRCULAR_16_2014
    assert CIRCULAR_16_2014.bands(6).count(Band.PEAK) == 0


def test_the_simulators_hours_are_the_calendars() -> None:
    assert hours(CIRCULAR_16_2014.peak) == ((9.5, 11.5), (17.0, 20.0))
    assert hours(OFFICE_HOURS.windows) == ((7.5, 11.5), (13.0, 17.0))
    assert hours(CIRCULAR_16_2014.off_peak) == ((22.0, 24.0), (0.0, 4.0))


@pytest.mark.parametrize(
    ("after", "backwards"),
    [
        (812.5, False),
        (812.5 - COUNTER_TOLERANCE / 2, False),
        (812.5 - 2 * COUNTER_TOLERANCE, True),
        (0.25, True),
    ],
)
def test_agent_intervals_and_detector_agree_on_a_counter_going_backwards(
    after: float, backwards: bool
) -> None:
    before = 812.5
    assert went_backwards(before, after) is backwards

    stats = MeterStats(since=0)
    stats.record_poll(Poll(ts=0, values={"energy_import_kwh": before}), latency_s=0)
    resets = stats.record_poll(Poll(ts=MINUTE, values={"energy_import_kwh": after}), latency_s=0)
    assert resets == ([CounterReset("energy_import_kwh", before, after)] if backwards else [])

    step = CounterStep(CounterSample(0, before), CounterSample(MINUTE, after))
    assert step.reset is backwards
    assert step.energy == 0.0  # never negative, whether a reset or rounding

    samples = [Sample(t * MINUTE, 1.0, before if t < 3 else after) for t in range(6)]
    series = Series.of("s.m", samples, poll_ms=MINUTE, start_ms=0, end_ms=6 * MINUTE)
    context = Context("s", "s.m", MeterConfig(role=Role.MACHINE, rated_kw=10), SiteConfig())
    found = [f for f in detect(context, series) if f.rule == "counter_reset"]
    assert len(found) == int(backwards)


def test_went_backwards_works_on_arrays_and_ignores_nan() -> None:
    energy = np.array([10.0, 10.0, 9.995, np.nan, 5.0, 4.0])
    assert went_backwards(energy[:-1], energy[1:]).tolist() == [False, False, False, False, True]


def test_a_reading_is_redated_by_its_monotonic_time() -> None:
    reading = Reading(
        meter="m1", profile="eastron-sdm630", ts=5, values={}, quality=Quality.GOOD,
        clock=ClockState.UNSYNCED, mono_ms=1_000,
    )  # fmt: skip
    assert redate(reading, 1_700_000_000_000).model_dump() == {
        **reading.model_dump(), "ts": 1_700_000_001_000, "clock": ClockState.CORRECTED,
    }  # fmt: skip
    with pytest.raises(ValueError, match="no monotonic time"):
        redate(reading.model_copy(update={"mono_ms": None}), 0)


def test_the_agent_loads_no_calendar_or_array_library() -> None:
    """On a Pi every megabyte counts: holidays, astral and numpy stay out of the agent's process."""
    code = (
        "import sys, agent.cli, agent.runner, kilowatch.calendars, kilowatch.clock, kilowatch.counters; "
        "print(sorted(m for m in ('holidays', 'astral', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
