"""A street-lighting cabinet: lamps lit on a timer window (19:00-04:30 as the plan recommends), at
sunset and sunrise computed with `astral`, or by photocell; dimmed in steps late at night; lamps failing
and being repaired.

A timer drifts a few minutes and a photocell follows the clouds, so lights switch a little early or late:
the model labels each switching offset from the fixed window as benign, the variation a naive
"outside 19:00-04:30" rule would alert on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import cache

import numpy as np
from astral import Observer
from astral.sun import sunrise, sunset

from kilowatch.timebase import VIETNAM_TZ
from sim.load_model import (
    Demand,
    Flags,
    Floats,
    PhaseShares,
    Times,
    instants,
    local_days,
    local_hour,
    phase_shares,
    seeded_rng,
    split,
)
from sim.loads import Category, Mode, Span

LAMP_W = 150.0
"""One LED street lamp; a cabinet's rated power divided by it gives its number of lamps."""

_STANDBY = (15.0, 0.6)
"""The cabinet's controller and contactor coils, always on."""

_FAILURE_CHANCE = 0.02
"""Chance that a given lamp fails in a given month."""


class SwitchMode(StrEnum):
    FIXED = "fixed"
    ASTRONOMICAL = "astronomical"
    PHOTOCELL = "photocell"


@dataclass(frozen=True)
class LightingSchedule:
    mode: SwitchMode = SwitchMode.FIXED
    on: float = 19.0
    """Local hour the fixed window opens (also the reference the offsets are labelled against)."""
    off: float = 4.5
    """Local hour, next morning, it closes."""
    dimming: tuple[tuple[float, float], ...] = ((23.0, 0.7), (1.0, 0.5))
    """(local hour, level) steps after switching on, in the order they happen through the night."""
    latitude: float = 21.85
    longitude: float = 106.76


def _jitter_minutes(schedule: LightingSchedule) -> float:
    return 15.0 if schedule.mode is SwitchMode.PHOTOCELL else 5.0


@cache
def night(seed: int, key: str, schedule: LightingSchedule, evening: date) -> tuple[datetime, datetime]:
    """When the lamps switch on in the evening of `evening` and off the next morning."""
    rng = seeded_rng("night", seed, key, evening.isoformat())
    jitter = _jitter_minutes(schedule)
    morning = evening + timedelta(days=1)
    if schedule.mode is SwitchMode.FIXED:
        on = datetime.combine(evening, time(), VIETNAM_TZ) + timedelta(hours=schedule.on)
        off = datetime.combine(morning, time(), VIETNAM_TZ) + timedelta(hours=schedule.off)
    else:
        where = Observer(schedule.latitude, schedule.longitude)
        on = sunset(where, evening, tzinfo=VIETNAM_TZ)
        off = sunrise(where, morning, tzinfo=VIETNAM_TZ)
    return (
        on + timedelta(minutes=rng.uniform(-jitter, jitter)),
        off + timedelta(minutes=rng.uniform(-jitter, jitter)),
    )


@cache
def _failures(seed: int, key: str, lamps: int, month: int) -> tuple[tuple[date, date, int], ...]:
    """(failed on, repaired on, lamps) events starting in `month` (months since year 0)."""
    rng = seeded_rng("lamps", seed, key, month)
    first = date(month // 12, month % 12 + 1, 1)
    events = []
    for _ in range(lamps):
        if rng.random() < _FAILURE_CHANCE:
            failed = first + timedelta(days=rng.randrange(28))
            events.append((failed, failed + timedelta(days=rng.randint(3, 20)), 1))
    return tuple(events)


@dataclass(frozen=True)
class StreetLighting:
    seed: int
    key: str
    rated_w: float
    shares: PhaseShares
    schedule: LightingSchedule = LightingSchedule()
    modes: frozenset[Mode] = frozenset({Mode.ON, Mode.OFF})

    @property
    def lamps(self) -> int:
        return max(1, round(self.rated_w / LAMP_W))

    def lit(self, ms: Times) -> Flags:
        lit = np.zeros(len(ms), dtype=np.bool_)
        for day, part in local_days(ms):
            for evening in (day - timedelta(days=1), day):
                on, off = instants(*night(self.seed, self.key, self.schedule, evening))
                lit[part] |= (on <= ms[part]) & (ms[part] < off)
        return lit

    def dimming(self, ms: Times) -> Floats:
        """The dimming level at each instant, counting hours from noon so steps past midnight sort after
        evening ones."""
        since_noon = (local_hour(ms) - 12.0) % 24
        level = np.ones(len(ms))
        for hour, step in self.schedule.dimming:
            level[since_noon >= (hour - 12.0) % 24] = step
        return level

    def failed_lamps(self, day: date) -> int:
        month = day.year * 12 + day.month - 1
        return sum(
            n
            for m in (month - 1, month)
            for failed, repaired, n in _failures(self.seed, self.key, self.lamps, m)
            if failed <= day < repaired
        )

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        on = np.full(len(ms), mode is Mode.ON) if mode in (Mode.ON, Mode.OFF) else self.lit(ms)
        working = np.empty(len(ms))
        for day, part in local_days(ms):
            working[part] = 1.0 - self.failed_lamps(day) / self.lamps
        level = np.ones(len(ms)) if mode is Mode.ON else self.dimming(ms)
        lamps = (self.rated_w * working * level * on, np.where(level == 1.0, 0.95, 0.9))
        return split(ms, [_STANDBY, lamps], self.shares, self.seed, self.key)

    def spans(self, day: date) -> list[Span]:
        """Switching offsets from the fixed window (benign) and lamps out (benign: a cabinet still lit)."""
        on, off = night(self.seed, self.key, self.schedule, day)
        midnight = datetime.combine(day, time(), VIETNAM_TZ)
        nominal_on = midnight + timedelta(hours=self.schedule.on)
        nominal_off = midnight + timedelta(days=1, hours=self.schedule.off)
        spans = [
            Span("switch_offset", Category.BENIGN, min(a, b), max(a, b),
                 round((a - b).total_seconds() / 60, 1), "min")
            for a, b in ((on, nominal_on), (off, nominal_off))
            if abs(a - b) >= timedelta(minutes=1)
        ]  # fmt: skip
        failed = self.failed_lamps(day)
        if failed:
            spans.append(Span("lamp_failure", Category.BENIGN, on, off, failed, "lamps"))
        return spans


def street_lighting(seed: int, key: str, rated_w: float, schedule: LightingSchedule) -> StreetLighting:
    return StreetLighting(seed, key, rated_w, phase_shares(seed, key, spread=0.15), schedule)
