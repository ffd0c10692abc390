"""Vietnamese calendars as data: public holidays, office hours and shifts, time-of-use bands.

The simulator draws loads by them and the collector judges readings by them, so both import them from
here. Scalar functions and pydantic models only; the array forms (a year of slots at once) are built from
these by their users. Public holidays (Tết included) come from the `holidays` package, imported when first
asked for, so importing this module costs a gateway nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, time
from enum import StrEnum
from functools import cache, cached_property
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kilowatch.timebase import SLOT_MS, SLOTS_PER_DAY

MONDAY_TO_FRIDAY = (0, 1, 2, 3, 4)
MONDAY_TO_SATURDAY = (0, 1, 2, 3, 4, 5)
_SLOT_MINUTES = SLOT_MS // 60_000


@cache
def _vietnam_holidays(year: int) -> frozenset[date]:
    import holidays

    return frozenset(holidays.country_holidays("VN", years=year))


def is_public_holiday(d: date) -> bool:
    """A Vietnamese public holiday (Tết included), per the `holidays` package."""
    return d in _vietnam_holidays(d.year)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def minute_of_day(t: time) -> int:
    return t.hour * 60 + t.minute


class Window(_Model):
    """A stretch of a local day; one ending at or before its start runs past midnight (22:00-04:00).
    ``to: "24:00"`` is written as ``"00:00"``."""

    start: time = Field(alias="from", description="Local start, HH:MM (quoted)", examples=["07:30"])
    end: time = Field(
        alias="to", description="Local end, HH:MM; at or before the start: the next day", examples=["11:30"]
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end and self.start != time(0):
            raise ValueError(f"the window {self.start}-{self.end} is empty")
        return self

    def minutes(self) -> list[tuple[int, int]]:
        """[from, to) in minutes of the day, split at midnight when it wraps."""
        a, b = minute_of_day(self.start), minute_of_day(self.end) or 1440
        return [(a, b)] if a < b else [(a, 1440), (0, b)]


def window(start: str, end: str) -> Window:
    return Window.model_validate({"from": start, "to": end})


def hours(windows: Iterable[Window]) -> tuple[tuple[float, float], ...]:
    """`windows` as [from, to) local hours (split at midnight), the form the simulator's load curves take."""
    return tuple((a / 60, b / 60) for w in windows for a, b in w.minutes())


def _slots(windows: tuple[Window, ...]) -> frozenset[int]:
    """Quarter hours (0..95) a slot of which starts inside one of `windows`."""
    return frozenset(
        s for w in windows for a, b in w.minutes() for s in range(SLOTS_PER_DAY) if a <= s * _SLOT_MINUTES < b
    )


class WeeklyHours(_Model):
    """Windows on some weekdays (0 = Monday): office hours, shifts, permitted overtime."""

    days: tuple[int, ...] = Field(MONDAY_TO_FRIDAY, description="Weekdays, 0 = Monday to 6 = Sunday")
    windows: tuple[Window, ...] = Field(
        (window("07:30", "11:30"), window("13:00", "17:00")), description="Windows on each of those days"
    )

    @field_validator("days")
    @classmethod
    def _weekdays(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 <= d <= 6 for d in days):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return days

    @cached_property
    def slots(self) -> frozenset[int]:
        return _slots(self.windows)

    def contains_minute(self, weekday: int, minute: int) -> bool:
        return weekday in self.days and any(a <= minute < b for w in self.windows for a, b in w.minutes())


OFFICE_HOURS = WeeklyHours()
"""Vietnamese public offices: Monday to Friday 07:30-11:30 and 13:00-17:00."""


class Band(StrEnum):
    PEAK = "peak"
    NORMAL = "normal"
    OFF_PEAK = "off_peak"


BANDS = tuple(Band)
"""Each band by its index, the code array forms use."""


class TouCalendar(_Model):
    """One time-of-use calendar, in force from `effective_from` until the next one of a site's list."""

    name: str = Field(description="Name of the calendar (in logs)", examples=["own-2027"])
    effective_from: date = Field(description="First day it applies", examples=["2027-01-01"])
    peak: tuple[Window, ...] = Field(
        description="Peak-band windows on peak_days", examples=[[{"start": "17:30", "end": "22:30"}]]
    )
    off_peak: tuple[Window, ...] = Field(
        description="Off-peak windows, every day", examples=[[{"start": "00:00", "end": "06:00"}]]
    )
    peak_days: tuple[int, ...] = Field(
        MONDAY_TO_SATURDAY, description="Weekdays with a peak band (0 = Monday); Sunday has none"
    )

    @cached_property
    def _bands(self) -> tuple[tuple[Band, ...], tuple[Band, ...]]:
        """(band of each slot on a peak day, on another day)."""
        peak, off = _slots(self.peak), _slots(self.off_peak)
        rest = tuple(Band.OFF_PEAK if s in off else Band.NORMAL for s in range(SLOTS_PER_DAY))
        return tuple(Band.PEAK if s in peak else rest[s] for s in range(SLOTS_PER_DAY)), rest

    def bands(self, weekday: int) -> tuple[Band, ...]:
        """The band of each quarter hour of a day that is `weekday` (0 = Monday)."""
        return self._bands[0 if weekday in self.peak_days else 1]


CIRCULAR_16_2014 = TouCalendar(
    name="circular-16-2014",
    effective_from=date(2014, 6, 1),
    peak=(window("09:30", "11:30"), window("17:00", "20:00")),
    off_peak=(window("22:00", "04:00"),),
)
DECISION_963_2026 = TouCalendar(
    name="decision-963-2026",
    effective_from=date(2026, 5, 1),  # reported for April 2026; a site overrides the date if it differs
    peak=(window("17:30", "22:30"),),
    off_peak=(window("00:00", "06:00"),),
)
TOU_CALENDARS = {c.name: c for c in (CIRCULAR_16_2014, DECISION_963_2026)}
"""The named calendars a site may pick by name."""


def in_force(calendars: Iterable[TouCalendar], d: date) -> TouCalendar:
    """The calendar in force on `d`: the latest `effective_from` not after it (the earliest one before
    any takes effect)."""
    ordered = sorted(calendars, key=lambda c: c.effective_from)
    current = ordered[0]
    for calendar in ordered:
        if calendar.effective_from <= d:
            current = calendar
    return current
