"""Which days Vietnamese sites work and when the tariff's peak bands are: the calendar loads follow.

Public holidays (Tết included) come from the `holidays` package, so a scenario spanning a year closes
offices on the right days without a hand-kept list.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import holidays
import numpy as np

from sim.load_model import Flags, Times, local_hour, local_weekday

PEAK_BANDS = ((9.5, 11.5), (17.0, 20.0))
"""Circular 16/2014/TT-BCT: Monday to Saturday peak bands, local hours; Sunday has none."""


@cache
def _vietnam_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("VN", years=year))


def is_holiday(day: date) -> bool:
    """A Vietnamese public holiday: offices and most factories close."""
    return day in _vietnam_holidays(day.year)


def is_workday(day: date) -> bool:
    """Monday to Friday and not a public holiday."""
    return day.weekday() < 5 and not is_holiday(day)


def in_peak_band(ms: Times) -> Flags:
    """Whether each instant falls in a peak band of the time-of-use tariff (holidays are not special)."""
    hour = local_hour(ms)
    inside = np.zeros(len(ms), dtype=np.bool_)
    for start, end in PEAK_BANDS:
        inside |= (hour >= start) & (hour < end)
    result: Flags = inside & (local_weekday(ms) != 6)
    return result
