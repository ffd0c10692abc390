"""Outdoor temperature in northern Vietnam, with the multi-day hot spells that drive air conditioning.

Lạng Sơn has a cool winter (about 14 °C in January) and a hot summer (about 28 °C in July); a hot spell
raises air-conditioning load by 10-25 % for a few days. That is normal operation, not waste, so the
generator labels spells as benign and a detector can be measured against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import numpy as np

from sim.load_model import Floats, Times, local_days, local_hour, seeded_rng, slow_noise

_SPELL_CHANCE = 0.3
"""Share of weeks in which a hot spell starts."""


@dataclass(frozen=True)
class HotSpell:
    first: date
    last: date
    raise_fraction: float
    """How much more the air conditioning draws on these days (0.10-0.25)."""


def seasonal_temperature(day: date) -> float:
    """Mean daily temperature, °C: coolest mid-January, hottest mid-July."""
    return 21.5 - 7.0 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 15) / 365)


def daily_mean_temperature(seed: int, day: date) -> float:
    """The day's mean °C (the daily swing and the wandering weather average out): season and hot spell."""
    return seasonal_temperature(day) + (3.0 if hot_spell(seed, day) else 0.0)


def outdoor_temperature(ms: Times, seed: int) -> Floats:
    """°C at each instant: season, a day warmest at 14:30, wandering weather, and hot spells."""
    daily = np.empty(len(ms))
    for day, part in local_days(ms):
        daily[part] = daily_mean_temperature(seed, day)
    result: Floats = (
        daily
        + 4.0 * np.cos(2 * math.pi / 24 * (local_hour(ms) - 14.5))
        + 1.5 * slow_noise(ms, 1, seed, "weather", period_s=3 * 3600)[0]
    )
    return result


@cache
def _spell_of_week(seed: int, week: int) -> HotSpell | None:
    rng = seeded_rng("hot-spell", seed, week)
    if rng.random() >= _SPELL_CHANCE:
        return None
    first = date.fromordinal(week * 7 + rng.randrange(7) + 1)
    return HotSpell(first, first + timedelta(days=rng.randint(2, 5)), round(rng.uniform(0.10, 0.25), 3))


def hot_spell(seed: int, day: date) -> HotSpell | None:
    """The hot spell `day` is in, if any; only in the warm season, when offices run air conditioning."""
    if seasonal_temperature(day) < 24.0:
        return None
    week = (day.toordinal() - 1) // 7
    for candidate in (_spell_of_week(seed, week), _spell_of_week(seed, week - 1)):
        if candidate is not None and candidate.first <= day <= candidate.last:
            return candidate
    return None
