"""Reconnection delays: doubling, capped, jittered, reset after success."""

from __future__ import annotations

import pytest

from kilowatch.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(first_s=1, max_s=60)
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_gateways_apart() -> None:
    assert len({Backoff(first_s=1, max_s=60).next_delay() for _ in range(20)}) > 1


def test_reset_starts_again() -> None:
    backoff = Backoff(first_s=1, max_s=60)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first_s=5, max_s=1)
