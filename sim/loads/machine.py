"""A factory machine on a sub-meter: OFF outside shifts, LOADED most of a shift with short IDLE spells
between jobs, its loaded level drifting over weeks (tool wear, product mix).

A large machine whose plant avoids the peak bands (R9) is switched off in them. An idle motor shows the
poor power factor of a motor at no load, which is how a detector tells IDLE from LOADED.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import cache

from sim.calendar import in_peak_band, is_holiday
from sim.load_model import (
    VIETNAM_TZ,
    Demand,
    PhaseShares,
    local_hour,
    local_time,
    phase_shares,
    seeded_rng,
    slow_noise,
    split,
)
from sim.loads import Category, Mode, Span

DRIFT_PERIOD_S = 14 * 86_400.0
"""Loaded levels change course every fortnight."""

_DRIFT_LABEL = 0.05
"""A week whose drift exceeds this share of the usual level is labelled benign: a fixed threshold on
loaded kW would fire on it."""


class State(StrEnum):
    OFF = "off"
    IDLE = "idle"
    LOADED = "loaded"


@dataclass(frozen=True)
class ShiftSchedule:
    shifts: tuple[tuple[float, float], ...] = ((6.0, 14.0), (14.0, 22.0))
    saturday: bool = True


@cache
def machine_day(seed: int, key: str, schedule: ShiftSchedule, day: date) -> tuple[tuple[float, State], ...]:
    """(from local hour, state) segments of `day`: jobs of 20-90 min, idle spells of 2-12 min between."""
    if is_holiday(day) or day.weekday() == 6 or (day.weekday() == 5 and not schedule.saturday):
        return ((0.0, State.OFF),)
    rng = seeded_rng("machine-day", seed, key, day.isoformat())
    segments = [(0.0, State.OFF)]
    for start, end in schedule.shifts:
        hour = start + rng.uniform(0.0, 0.2)
        while hour < end:
            segments.append((hour, State.LOADED))
            hour += rng.uniform(20, 90) / 60
            if hour < end:
                segments.append((hour, State.IDLE))
                hour += rng.uniform(2, 12) / 60
        segments.append((end, State.OFF))
    return tuple(segments)


@dataclass(frozen=True)
class Machine:
    seed: int
    key: str
    rated_w: float
    idle_share: float
    loaded_share: float
    idle_pf: float
    loaded_pf: float
    shares: PhaseShares
    avoids_peak: bool
    schedule: ShiftSchedule = ShiftSchedule()
    modes: frozenset[Mode] = frozenset({Mode.IDLE, Mode.LOADED})

    def drift(self, t: datetime) -> float:
        return 1.0 + 0.08 * slow_noise(t, self.seed, self.key, "drift", period_s=DRIFT_PERIOD_S)

    def state(self, t: datetime) -> State:
        segments = machine_day(self.seed, self.key, self.schedule, local_time(t).date())
        state = segments[bisect.bisect_right(segments, local_hour(t), key=lambda s: s[0]) - 1][1]
        if self.avoids_peak and state is not State.OFF and in_peak_band(t):
            return State.OFF
        return state

    def demand(self, t: datetime, mode: Mode | None = None) -> Demand:
        state = State(mode.value) if mode is not None else self.state(t)
        parts = [(0.005 * self.rated_w, 0.5)]  # control circuits
        if state is State.IDLE:
            parts.append((self.idle_share * self.rated_w, self.idle_pf))
        elif state is State.LOADED:
            level = self.loaded_share * self.drift(t) * (1 + 0.04 * slow_noise(t, self.seed, self.key, "job"))
            parts.append((level * self.rated_w, self.loaded_pf))
        return split(t, parts, self.shares, self.seed, self.key)

    def spans(self, day: date) -> list[Span]:
        """Each Monday, the week's drift when it is large enough to trip a fixed threshold."""
        if day.weekday() != 0:
            return []
        monday = datetime.combine(day, time(12), VIETNAM_TZ)
        drift = self.drift(monday) - 1.0
        if abs(drift) < _DRIFT_LABEL:
            return []
        start = monday - timedelta(hours=12)
        return [
            Span(
                "level_drift", Category.BENIGN, start, start + timedelta(days=7), round(drift, 3), "fraction"
            )
        ]


def machine(seed: int, key: str, rated_w: float, schedule: ShiftSchedule, avoids_peak: bool) -> Machine:
    rng = seeded_rng("machine", seed, key)
    return Machine(
        seed, key, rated_w,
        idle_share=rng.uniform(0.12, 0.2), loaded_share=rng.uniform(0.7, 0.9),
        idle_pf=rng.uniform(0.2, 0.3), loaded_pf=rng.uniform(0.82, 0.88),
        shares=phase_shares(seed, key, spread=0.03), avoids_peak=avoids_peak, schedule=schedule,
    )  # fmt: skip
