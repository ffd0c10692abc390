"""A site's calendar as the detectors consult it: the core's Vietnamese calendars
(:mod:`kilowatch.calendars`: time-of-use bands with effective dates, office hours and shifts, public
holidays) as a site picks or overrides them, plus sunset/sunrise (from `astral`) for street lighting.

The detectors only ask questions of a :class:`SiteCalendar` (is this slot occupied? which band? is it
dark?), per local day and memoised, or for a whole backfill's slots at once as arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time, timedelta
from functools import cached_property
from typing import Any, Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt
from astral import Observer
from astral.sun import sunrise, sunset
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kilowatch.calendars import (
    BANDS,
    DECISION_963_2026,
    MONDAY_TO_FRIDAY,
    OFFICE_HOURS,
    TOU_CALENDARS,
    Band,
    TouCalendar,
    WeeklyHours,
    in_force,
    is_public_holiday,
    minute_of_day,
    window,
)
from kilowatch.timebase import (
    SLOTS_PER_DAY,
    VIETNAM_TZ,
    as_date,
    day_start_ms,
    local_datetime,
    local_day,
    slot_of_day,
)

T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
        "from tou_2026_from) or your own {name, effective_from, peak, off_peak}; the one with the latest "
        "effective_from not after a day applies",
    )
    tou_2026_from: date | None = Field(
        None,
        description="The day the 2026 time-of-use bands (decision-963-2026) took effect for the site, as its "
        f"EVN bill shows; null: not confirmed, {DECISION_963_2026.effective_from} assumed, and the log, the "
        "daily report and /healthz say so",
        examples=["2026-05-01"],
    )
    occupancy: WeeklyHours = Field(
        OFFICE_HOURS,
        description="Occupied hours: office hours (Vietnamese public offices work 07:30-11:30 and "
        "13:00-17:00), or the shifts of a plant",
    )
    permitted: WeeklyHours = Field(
        WeeklyHours(days=MONDAY_TO_FRIDAY, windows=(window("07:00", "07:30"), window("11:30", "13:00"))),
        description="Neither occupied nor after hours: early arrivals and the lunch break; permitted "
        "overtime and Saturday mornings worked with permission only where the site declares them (an "
        "undeclared evening is judged by its shape: one that ramps down as people leave is overtime, a "
        "flat or cycling load left running is waste). (Windows count only where `occupancy` does not "
        "already cover them.)",
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
        named = dict(TOU_CALENDARS)
        if self.tou_2026_from is not None:
            named[DECISION_963_2026.name] = DECISION_963_2026.model_copy(
                update={"effective_from": self.tou_2026_from}
            )
        return [named[e] if isinstance(e, str) else e for e in self.tou]

    @property
    def tou_unconfirmed(self) -> str | None:
        """A warning when the site's bands switch on the 2026 calendar's assumed date, not a confirmed one."""
        if self.tou_2026_from is not None or DECISION_963_2026.name not in self.tou:
            return None
        return (
            f"time-of-use bands switch to {DECISION_963_2026.name} on the assumed "
            f"{DECISION_963_2026.effective_from}: set calendar.tou_2026_from to the date on the site's EVN bill"
        )

    def tou_calendar(self, d: date) -> TouCalendar:
        """The calendar in force on `d` (the earliest one before any takes effect)."""
        return in_force(self._tou, d)

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
        skip = slot_of_day(start_ms)
        first = local_day(start_ms)
        rows = [
            self._per_day("band_codes", d, _band_codes)
            for d in range(first, first + -(-(skip + count) // SLOTS_PER_DAY))
        ]
        return np.concatenate([np.zeros(0, dtype=np.int8), *rows])[skip : skip + count]

    def band_at(self, ts_ms: int) -> Band:
        return self.bands(local_day(ts_ms))[slot_of_day(ts_ms)]

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
        on = day_start_ms(day) + minute_of_day(lighting.on_at) * 60_000
        off = day_start_ms(day + 1) + minute_of_day(lighting.off_at) * 60_000
        return on, off
    where = Observer(calendar.coordinates.lat, calendar.coordinates.lon)
    on_at = sunset(where, d, tzinfo=VIETNAM_TZ)
    off_at = sunrise(where, d + timedelta(days=1), tzinfo=VIETNAM_TZ)
    return round(on_at.timestamp() * 1000), round(off_at.timestamp() * 1000)
