"""Time as every part counts it: UTC epoch milliseconds, Vietnamese local time and the 15-minute slot.

Vietnam keeps UTC+7 all year (no daylight saving), so local time is a fixed offset, exact without a time
zone database on the gateway, and a local day is always 96 quarter hours. Slots are aligned in UTC; with
a whole-hour offset that is local alignment too. Pure arithmetic, standard library only: the agent
imports it on a Raspberry Pi.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

VIETNAM_TZ = timezone(timedelta(hours=7), "ICT")
"""Local time of every site."""

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
OFFSET_MS = 7 * HOUR_MS
"""Local time minus UTC, ms."""

SLOT_MS = 15 * 60_000
"""The 15-minute slot: the interval energy is booked in and the time-of-use bands are resolved to."""
SLOTS_PER_DAY = DAY_MS // SLOT_MS
SLOT_HOURS = SLOT_MS / HOUR_MS
"""0.25: mean kW over a slot is its kWh divided by this."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = EPOCH.date()


def to_ms(moment: datetime) -> int:
    """UTC epoch ms of a timezone-aware `moment`, in integers (no float rounding)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def utc_datetime(ts_ms: int) -> datetime:
    """The UTC datetime of epoch ms `ts_ms`."""
    return EPOCH + timedelta(milliseconds=ts_ms)


def utc_datetime_or_none(ts_ms: int) -> datetime | None:
    """The UTC datetime of epoch ms `ts_ms`, or None when no calendar date has it (past year 9999, before
    year 1): what a gateway's broken clock may have stamped, shown without failing."""
    try:
        return utc_datetime(ts_ms)
    except (OverflowError, ValueError):
        return None


def local_datetime(ts_ms: int) -> datetime:
    """The Vietnamese local datetime of epoch ms `ts_ms`."""
    return utc_datetime(ts_ms).astimezone(VIETNAM_TZ)


def bucket_start(ts_ms: int) -> int:
    """Start (UTC ms) of the 15-minute slot that contains `ts_ms`."""
    return ts_ms - ts_ms % SLOT_MS


def slot_of_day(ts_ms: int) -> int:
    """Which quarter hour (0..95) of its local day `ts_ms` falls in."""
    return (ts_ms + OFFSET_MS) % DAY_MS // SLOT_MS


def local_day(ts_ms: int) -> int:
    """Days since 1970-01-01 in local time: the integer key every per-day cache uses."""
    return (ts_ms + OFFSET_MS) // DAY_MS


def day_start_ms(day: int) -> int:
    """UTC ms of local midnight starting local `day` (as numbered by :func:`local_day`)."""
    return day * DAY_MS - OFFSET_MS


def as_date(day: int) -> date:
    """The date of local `day` (as numbered by :func:`local_day`)."""
    return _EPOCH_DATE + timedelta(days=day)


def day_number(d: date) -> int:
    """Local `d` as numbered by :func:`local_day`."""
    return (d - _EPOCH_DATE).days
