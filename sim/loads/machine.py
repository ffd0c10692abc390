"""A factory machine on a sub-meter: OFF outside shifts, LOADED most of a shift with short IDLE spells
between jobs, its loaded level drifting over weeks (tool wear, product mix).

A large machine whose plant avoids the peak bands (R9) is switched off in them. An idle motor shows the
poor power factor of a motor at no load, which is how a detector tells IDLE from LOADED.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import IntEnum
from functools import cache

import numpy as np
import numpy.typing as npt

from kilowatch.calendars import is_public_holiday
from kilowatch.timebase import VIETNAM_TZ
from sim.calendar import in_peak_band
from sim.load_model import (
    Component,
    Demand,
    Floats,
    PhaseShares,
    Times,
    instants,
    local_days,
    local_hour,
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


class State(IntEnum):
    OFF = 0
    IDLE = 1
    LOADED = 2


States = npt.NDArray[np.int8]
"""A :class:`State` per instant."""


@dataclass(frozen=True)
class ShiftSchedule:
    shifts: tuple[tuple[float, float], ...] = ((6.0, 14.0), (14.0, 22.0))
    saturday: bool = True


@cache
def machine_day(seed: int, key: str, schedule: ShiftSchedule, day: date) -> tuple[tuple[float, State], ...]:
    """(from local hour, state) segments of `day`: jobs of 20-90 min, idle spells of 2-12 min between."""
    if is_public_holiday(day) or day.weekday() == 6 or (day.weekday() == 5 and not schedule.saturday):
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

    def drift(self, ms: Times) -> Floats:
        result: Floats = (
            1.0 + 0.08 * slow_noise(ms, 1, self.seed, self.key, "drift", period_s=DRIFT_PERIOD_S)[0]
        )
        return result

    def state(self, ms: Times) -> States:
        hour = local_hour(ms)
        states = np.empty(len(ms), dtype=np.int8)
        for day, part in local_days(ms):
            starts, codes = zip(*machine_day(self.seed, self.key, self.schedule, day), strict=True)
            states[part] = np.array(codes, dtype=np.int8)[np.searchsorted(starts, hour[part], "right") - 1]
        if self.avoids_peak:
            states[(states != State.OFF) & in_peak_band(ms)] = State.OFF
        return states

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        state = np.full(len(ms), State[mode.name], dtype=np.int8) if mode is not None else self.state(ms)
        level = (
            self.loaded_share * self.drift(ms) * (1 + 0.04 * slow_noise(ms, 1, self.seed, self.key, "job")[0])
        )
        parts: list[Component] = [
            (0.005 * self.rated_w, 0.5),  # control circuits
            (np.where(state == State.IDLE, self.idle_share * self.rated_w, 0.0), self.idle_pf),
            (np.where(state == State.LOADED, level * self.rated_w, 0.0), self.loaded_pf),
        ]
        return split(ms, parts, self.shares, self.seed, self.key)

    def spans(self, day: date) -> list[Span]:
        """Each Monday, the week's drift when it is large enough to trip a fixed threshold."""
        if day.weekday() != 0:
            return []
        monday = datetime.combine(day, time(12), VIETNAM_TZ)
        drift = float(self.drift(instants(monday))[0]) - 1.0
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
