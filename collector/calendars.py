"""Every calendar the detectors consult, in one place: time-of-use bands with effective dates, office
hours and shifts, Vietnamese public holidays (from `holidays`) and sunset/sunrise (from `astral`).

A site picks named defaults or overrides each part in its configuration (:class:`SiteCalendar`); the
detectors only ask questions of it (is this slot occupied? which band? is it dark?). Vietnam keeps
UTC+7 all year, so local time is a fixed offset and a local day is 96 quarter hours, always.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import StrEnum
from functools import cache, cached_property
from typing import Any, Literal, Self, TypeVar, cast

import holidays
import numpy as np
import numpy.typing as npt
from astral import Observer
from astral.sun import sunrise, sunset
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

T = TypeVar("T")

VIETNAM_TZ = timezone(timedelta(hours=7), "ICT")
OFFSET_MS = 7 * 3_600_000
DAY_MS = 86_400_000
SLOT_MS = 15 * 60_000
SLOTS_PER_DAY = DAY_MS // SLOT_MS
SLOT_HOURS = SLOT_MS / 3_600_000
MONDAY_TO_FRIDAY = (0, 1, 2, 3, 4)
MONDAY_TO_SATURDAY = (0, 1, 2, 3, 4, 5)


def local_day(ts_ms: int) -> int:
    """Days since 1970-01-01 in Vietnamese local time: the integer key every per-day cache uses."""
    return (ts_ms + OFFSET_MS) // DAY_MS


def day_start_ms(day: int) -> int:
    """UTC ms of local midnight starting local `day` (as numbered by :func:`local_day`)."""
    return day * DAY_MS - OFFSET_MS


def as_date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def local_datetime(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(VIETNAM_TZ)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _minutes(t: time) -> int:
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
        a, b = _minutes(self.start), _minutes(self.end) or 1440
        return [(a, b)] if a < b else [(a, 1440), (0, b)]


def window(start: str, end: str) -> Window:
    return Window.model_validate({"from": start, "to": end})


def _slots(windows: tuple[Window, ...]) -> frozenset[int]:
    """Quarter hours (0..95) a slot of which starts inside one of `windows`."""
    return frozenset(
        s for w in windows for a, b in w.minutes() for s in range(SLOTS_PER_DAY) if a <= s * 15 < b
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

TWO_SHIFTS = WeeklyHours(
    days=MONDAY_TO_SATURDAY, windows=(window("06:00", "14:00"), window("14:00", "22:00"))
)


class Band(StrEnum):
    PEAK = "peak"
    NORMAL = "normal"
    OFF_PEAK = "off_peak"


BANDS = tuple(Band)
"""Each band by its code in :meth:`SiteCalendar.band_codes`."""


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


@cache
def _vietnam_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("VN", years=year))


def is_public_holiday(d: date) -> bool:
    """A Vietnamese public holiday (Tết included), per the `holidays` package."""
    return d in _vietnam_holidays(d.year)


class Coordinates(_Model):
    lat: float = Field(21.85, ge=-90, le=90, description="Latitude, degrees north")
    lon: float = Field(106.76, ge=-180, le=180, description="Longitude, degrees east")


class LightingWindow(_Model):
    """When street lights should burn: fixed (19:00-04:30, the plan's recommendation) or sunset to sunrise."""

    mode: Literal["fixed", "astronomical"] = Field(
        "fixed", description="fixed: from on_at to off_at; astronomical: from sunset to sunrise"
    )
    on_at: time = Field(time(19), description="mode fixed: when the lights go on, local time")
    off_at: time = Field(time(4, 30), description="mode fixed: when they go off, local time")


class SiteCalendar(_Model):
    """What a site is judged against; every part has domain.md's default and can be overridden."""

    tou: tuple[TouCalendar | str, ...] = Field(
        ("circular-16-2014", "decision-963-2026"),
        description="Time-of-use calendars by effective date, named (circular-16-2014; decision-963-2026, "
        "assumed in force from 2026-05-01) or your own {name, effective_from, peak, off_peak}; the one with "
        "the latest effective_from not after a day applies",
    )
    occupancy: WeeklyHours = Field(
        OFFICE_HOURS,
        description="Occupied hours: office hours (Vietnamese public offices work 07:30-11:30 and "
        "13:00-17:00), or the shifts of a plant",
    )
    permitted: WeeklyHours = Field(
        WeeklyHours(
            days=MONDAY_TO_SATURDAY,
            windows=(
                window("07:00", "07:30"),
                window("11:30", "13:00"),
                window("17:00", "22:00"),
                window("07:00", "12:00"),
            ),
        ),
        description="Neither occupied nor after hours: early arrivals, the lunch break, permitted overtime "
        "on weekday evenings, Saturday mornings worked with permission. A site that never works late narrows "
        "it. (Saturday evenings and weekday mornings before 07:30 fall inside these windows only where "
        "`occupancy` does not already cover them.)",
    )
    public_holidays: bool = Field(True, description="Closed on Vietnamese public holidays (Tết included)")
    closed_days: tuple[date, ...] = Field((), description="Other closed days, e.g. [2026-09-01]")
    working_days: tuple[date, ...] = Field(
        (), description="Make-up working days on a weekend (closed weekdays), e.g. [2026-04-25]"
    )
    coordinates: Coordinates = Field(
        Coordinates(), description="Where the site is, for sunset and sunrise (street lighting)"
    )
    lighting: LightingWindow = Field(LightingWindow(), description="When street lights should burn (R6)")

    @field_validator("tou")
    @classmethod
    def _known(cls, tou: tuple[TouCalendar | str, ...]) -> tuple[TouCalendar | str, ...]:
        for entry in tou:
            if isinstance(entry, str) and entry not in TOU_CALENDARS:
                raise ValueError(f"unknown TOU calendar {entry!r}; named ones: {', '.join(TOU_CALENDARS)}")
        if not tou:
            raise ValueError("at least one TOU calendar")
        return tou

    @cached_property
    def _tou(self) -> list[TouCalendar]:
        resolved = [TOU_CALENDARS[e] if isinstance(e, str) else e for e in self.tou]
        return sorted(resolved, key=lambda c: c.effective_from)

    def tou_calendar(self, d: date) -> TouCalendar:
        """The calendar in force on `d` (the earliest one before any takes effect)."""
        current = self._tou[0]
        for calendar in self._tou:
            if calendar.effective_from <= d:
                current = calendar
        return current

    @cached_property
    def _memo(self) -> dict[tuple[str, int], Any]:
        """Per-day answers, kept on the instance: hashing the whole model per lookup would cost more."""
        return {}

    def _per_day(self, what: str, day: int, compute: Callable[[SiteCalendar, int], T]) -> T:
        """Asked per interval of a year-long backfill, so the hit path is one dictionary lookup."""
        memo = self._memo
        try:
            return cast(T, memo[what, day])
        except KeyError:
            memo[what, day] = value = compute(self, day)
            return value

    def bands(self, day: int) -> tuple[Band, ...]:
        """The band of each quarter hour of local `day`."""
        return self._per_day("bands", day, _bands)

    def band_codes(self, start_ms: int, count: int) -> npt.NDArray[np.int8]:
        """The band of each of `count` quarter hours from the one holding `start_ms`, as its index in
        :data:`BANDS`: a whole backfill's bands in one array, built from per-day rows."""
        skip = (start_ms + OFFSET_MS) % DAY_MS // SLOT_MS
        first = local_day(start_ms)
        rows = [
            self._per_day("band_codes", d, _band_codes)
            for d in range(first, first + -(-(skip + count) // SLOTS_PER_DAY))
        ]
        return np.concatenate([np.zeros(0, dtype=np.int8), *rows])[skip : skip + count]

    def band_at(self, ts_ms: int) -> Band:
        return self.bands(local_day(ts_ms))[(ts_ms + OFFSET_MS) % DAY_MS // SLOT_MS]

    def is_closed(self, d: date) -> bool:
        """A closed day: after hours all day whatever the weekly hours say."""
        if d in self.working_days:
            return False
        return d in self.closed_days or (self.public_holidays and is_public_holiday(d))

    def occupied_slots(self, day: int) -> frozenset[int]:
        return self._per_day("occupied", day, _occupied)[0]

    def permitted_slots(self, day: int) -> frozenset[int]:
        return self._per_day("occupied", day, _occupied)[1]

    def in_shift(self, ts_ms: int) -> bool:
        d = local_datetime(ts_ms)
        if self.is_closed(d.date()):
            return False
        return self.occupancy.contains_minute(d.weekday(), d.hour * 60 + d.minute)

    def dark(self, day: int) -> tuple[int, int]:
        """[on, off) UTC ms of the night starting on the evening of local `day`."""
        return self._per_day("dark", day, _dark)


def _bands(calendar: SiteCalendar, day: int) -> tuple[Band, ...]:
    d = as_date(day)
    return calendar.tou_calendar(d).bands(d.weekday())


def _band_codes(calendar: SiteCalendar, day: int) -> npt.NDArray[np.int8]:
    codes = np.array([BANDS.index(b) for b in calendar.bands(day)], dtype=np.int8)
    codes.flags.writeable = False  # shared by every caller through the per-day memo
    return codes


def _occupied(calendar: SiteCalendar, day: int) -> tuple[frozenset[int], frozenset[int]]:
    d = as_date(day)
    if calendar.is_closed(d):
        return frozenset(), frozenset()
    weekday = d.weekday()
    occupied = calendar.occupancy.slots if weekday in calendar.occupancy.days else frozenset()
    if d in calendar.working_days:
        occupied = calendar.occupancy.slots
    permitted = calendar.permitted.slots - occupied if weekday in calendar.permitted.days else frozenset()
    return occupied, permitted


def _dark(calendar: SiteCalendar, day: int) -> tuple[int, int]:
    lighting, d = calendar.lighting, as_date(day)
    if lighting.mode == "fixed":
        on = day_start_ms(day) + _minutes(lighting.on_at) * 60_000
        off = day_start_ms(day + 1) + _minutes(lighting.off_at) * 60_000
        return on, off
    where = Observer(calendar.coordinates.lat, calendar.coordinates.lon)
    on_at = sunset(where, d, tzinfo=VIETNAM_TZ)
    off_at = sunrise(where, d + timedelta(days=1), tzinfo=VIETNAM_TZ)
    return round(on_at.timestamp() * 1000), round(off_at.timestamp() * 1000)
