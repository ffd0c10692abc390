"""The per-meter circuit breaker, cycle by cycle."""

from __future__ import annotations

import pytest

from agent.breaker import Breaker, BreakerState, Transition


def polls_until_probe(breaker: Breaker) -> int:
    """Cycles skipped before the breaker lets a poll through."""
    skipped = 0
    while not breaker.should_poll():
        skipped += 1
    return skipped


def test_opens_after_threshold_failures_in_a_row_only() -> None:
    breaker = Breaker(threshold=3)
    assert [breaker.record(ok) for ok in (False, False, True, False, False)] == [None] * 5
    assert (breaker.state, breaker.should_poll()) == (BreakerState.CLOSED, True)
    assert breaker.record(False) is Transition.OPENED
    assert breaker.state is BreakerState.OPEN


def test_skips_grow_exponentially_up_to_the_cap_then_a_success_closes() -> None:
    breaker = Breaker(threshold=2, max_skip=8)
    breaker.record(False)
    breaker.record(False)
    skips = []
    for _ in range(6):
        skips.append(polls_until_probe(breaker))
        assert breaker.record(False) is None  # a failed probe: still open, no new log line
    assert skips == [1, 2, 4, 8, 8, 8]
    assert polls_until_probe(breaker) == 8
    assert breaker.record(True) is Transition.CLOSED
    assert (breaker.state, breaker.failures, polls_until_probe(breaker)) == (BreakerState.CLOSED, 0, 0)
    breaker.record(False)
    assert breaker.record(False) is Transition.OPENED
    assert polls_until_probe(breaker) == 1  # the backoff starts over


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Breaker(threshold=0)
