"""Calendar answers for a whole backfill at once agree with the per-slot and per-night questions."""

from __future__ import annotations

from datetime import date

import numpy as np

from collector.calendars import LightingWindow, SiteCalendar
from collector.detectors.lighting import in_window
from kilowatch.calendars import BANDS
from kilowatch.timebase import DAY_MS, SLOT_MS, day_number, day_start_ms, local_day


def test_band_codes_follow_each_day_and_the_2026_change() -> None:
    calendar = SiteCalendar()
    start = day_start_ms(day_number(date(2026, 4, 28))) + 37 * SLOT_MS  # mid-day, across 1 May 2026
    count = 5 * 96 + 11
    codes = calendar.band_codes(start, count)
    assert [BANDS[c] for c in codes.tolist()] == [calendar.band_at(start + i * SLOT_MS) for i in range(count)]
    assert calendar.band_codes(start, 0).size == 0


def test_in_window_matches_the_nights_either_side_of_each_reading() -> None:
    calendar = SiteCalendar(lighting=LightingWindow(mode="astronomical"))
    first = day_start_ms(day_number(date(2025, 6, 20)))
    ts = np.arange(first, first + 3 * DAY_MS, 7 * 60_000, dtype=np.int64)
    expected = [
        any(on <= t < off for on, off in (calendar.dark(local_day(t) - 1), calendar.dark(local_day(t))))
        for t in ts.tolist()
    ]
    assert in_window(calendar, ts).tolist() == expected
    assert in_window(calendar, ts[:0]).size == 0
