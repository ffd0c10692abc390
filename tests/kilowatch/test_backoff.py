"""Reconnection delays: doubling, capped, jittered, reset after success."""

from __future__ import annotations

import collections
import random
import statistics

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


def test_quick_retries_come_first_then_the_wait_doubles() -> None:
    backoff = Backoff(first_s=1, max_s=8, quick=3)
    ceilings = [1, 1, 1, 1, 2, 4, 8, 8]
    for ceiling in ceilings:
        assert ceiling / 2 <= backoff.next_delay() <= ceiling
    backoff.reset()
    assert [backoff.next_delay() <= 1 for _ in range(4)] == [True] * 4


def reconnect_after(outage_s: float, backoff: Backoff) -> float:
    """Seconds from the broker's return to this agent's first attempt after it (connect time aside)."""
    t = 0.0
    while t < outage_s:
        t += backoff.next_delay()
    return t - outage_s


@pytest.mark.parametrize("outage_s", [5.0, 60.0, 600.0])
def test_many_agents_are_back_within_seconds_yet_spread_out(outage_s: float) -> None:
    """10,000 agents that lost the broker at the same moment, with the agent's policy (1 s, 3 quick
    retries, 8 s cap): half are back within 5 s of the broker's return, none later than the cap, and no
    second of the return sees half of them (the printed histogram shows the spread)."""
    from agent.config import MqttSettings
    from agent.publisher import QUICK_RETRIES

    settings = MqttSettings(host="broker")
    random.seed(19)
    waits = sorted(
        reconnect_after(
            outage_s,
            Backoff(first_s=settings.reconnect_min_s, max_s=settings.reconnect_max_s, quick=QUICK_RETRIES),
        )
        for _ in range(10_000)
    )
    assert statistics.median(waits) <= 5
    assert waits[-1] <= settings.reconnect_max_s
    per_second = collections.Counter(int(w) for w in waits)
    assert max(per_second.values()) < len(waits) / 2, sorted(per_second.items())
    print(
        f"outage {outage_s:g} s: median {statistics.median(waits):.2f} s, per second {sorted(per_second.items())}"
    )
