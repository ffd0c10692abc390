"""Which days Vietnamese sites work and when the tariff's peak bands are: the calendar loads follow.

The calendars are the core's (:mod:`kilowatch.calendars`), the ones the collector judges by; this module
holds their array forms. The simulated loads follow the bands of Circular 16/2014 on every date.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from kilowatch.calendars import CIRCULAR_16_2014, hours, is_public_holiday
from sim.load_model import Flags, Times, local_hour, local_weekday

PEAK_BANDS = hours(CIRCULAR_16_2014.peak)
"""Peak bands in local hours, on `CIRCULAR_16_2014.peak_days` (Monday to Saturday; Sunday has none)."""


def is_workday(day: date) -> bool:
    """Monday to Friday and not a public holiday."""
    return day.weekday() < 5 and not is_public_holiday(day)


def in_peak_band(ms: Times) -> Flags:
    """Whether each instant falls in a peak band of the time-of-use tariff (holidays are not special)."""
    hour = local_hour(ms)
    inside = np.zeros(len(ms), dtype=np.bool_)
    for start, end in PEAK_BANDS:
        inside |= (hour >= start) & (hour < end)
    result: Flags = inside & np.isin(local_weekday(ms), CIRCULAR_16_2014.peak_days)
    return result
