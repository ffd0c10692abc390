"""Simulated time: real monotonic seconds mapped onto a UTC timeline that may run faster than real time.

Running the clock fast lets a test or a demo live through an office day in minutes. The mapping uses the
monotonic clock, so adjusting the host's wall clock never makes simulated time (and with it the energy
counters) jump or run backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class SimClock:
    """Simulated UTC time: ``start`` when created, advancing ``speed`` simulated seconds per real second.

    Args:
        start: Simulated time at creation; timezone-aware (naive times are ambiguous and refused).
            None starts at the current UTC time.
        speed: Simulated seconds per real second (1 = real time, 60 = an hour per minute).
        monotonic: Source of real seconds; tests pass a fake to step time without sleeping.
    """

    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if start is not None and start.utcoffset() is None:
            raise ValueError(f"start {start.isoformat()} has no timezone; give one, e.g. +07:00 or Z")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self.speed = speed
        self._monotonic = monotonic
        self._origin = monotonic()

    def elapsed(self) -> timedelta:
        """Simulated time passed since `start` (never negative, never decreasing)."""
        return timedelta(seconds=(self._monotonic() - self._origin) * self.speed)

    def now(self) -> datetime:
        """The current simulated time in UTC."""
        return self.start + self.elapsed()
