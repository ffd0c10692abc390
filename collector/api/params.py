"""Query and path parameter types that keep extreme input a 422, never a 500.

Times and dates are refused outside :data:`EARLIEST`..:data:`LATEST`: far enough from Python's and the
ledger's limits (year 1..9999, signed 64-bit milliseconds) that a route may still add or subtract a range
to one. A bare number is refused where a time is meant: pydantic would take ``?to=0`` for the epoch, which
nobody means. Ids are bounded by the ledger's signed 64-bit integers.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BeforeValidator

from kilowatch.mqtt_contract import INT64_MAX

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest time or day a query may name."""
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""A time or day a query may name is before this."""

_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _not_a_number(value: object) -> object:
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError(
            "a bare number is not a time: give ISO 8601 with an offset, e.g. 2026-01-31T17:00:00Z"
        )
    return value


def _time_in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d}")
    return value


def _day_in_range(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d}")
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_time_in_range)]
"""An ISO 8601 time with an offset, within EARLIEST..LATEST."""
Day = Annotated[date, BeforeValidator(_not_a_number), AfterValidator(_day_in_range)]
"""An ISO 8601 day (YYYY-MM-DD), within EARLIEST..LATEST."""
RowId = Annotated[int, Path(ge=1, le=INT64_MAX, description="The id (a positive 64-bit integer)")]
"""A ledger row id in a path."""
