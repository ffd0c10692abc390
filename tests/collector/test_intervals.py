"""Pure interval arithmetic: spreading a counter delta over 15-minute buckets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from collector.intervals import MAX_SPREAD_MS, CounterSample, CounterStep, spread
from kilowatch.timebase import SLOT_MS, bucket_start
from tests.collector_support import at


def test_a_span_across_a_boundary_is_split_by_time() -> None:
    assert spread(at(10, 14), at(10, 16), 2.0) == [(at(10, 0), 1.0), (at(10, 15), 1.0)]


def test_a_span_ending_on_a_boundary_gives_the_next_bucket_nothing() -> None:
    assert spread(at(10, 15), at(10, 30), 3.0) == [(at(10, 15), 3.0)]


def test_a_span_over_three_buckets_is_shared_in_proportion() -> None:
    shares = spread(at(10, 10), at(10, 40), 6.0)
    assert [bucket for bucket, _ in shares] == [at(10, 0), at(10, 15), at(10, 30)]
    assert [share for _, share in shares] == pytest.approx([1.0, 3.0, 2.0])
    assert sum(share for _, share in shares) == pytest.approx(6.0)


def test_a_span_within_one_bucket_gives_it_the_whole_amount() -> None:
    assert spread(at(10, 1), at(10, 14, 59), 0.7) == [(at(10), 0.7)]


def test_a_span_must_move_forward() -> None:
    with pytest.raises(ValueError, match="forward"):
        spread(at(10), at(10), 1.0)


def test_buckets_are_aligned_to_15_minutes_which_is_also_local_time_in_vietnam() -> None:
    assert bucket_start(at(10, 14, 59)) == at(10, 0)
    assert bucket_start(at(10, 15)) == at(10, 15)
    local = datetime(2024, 5, 1, 17, 45, tzinfo=timezone(timedelta(hours=7)))  # 10:45 UTC
    assert bucket_start(int(local.timestamp() * 1000) + 1) == int(local.timestamp() * 1000)
    assert SLOT_MS == 900_000


def test_a_counter_going_backwards_is_a_reset_worth_nothing() -> None:
    step = CounterStep(CounterSample(at(10), 120.0), CounterSample(at(10, 5), 3.0))
    assert step.reset
    assert step.energy == 0.0


def test_a_step_covers_its_buckets_even_when_nothing_flowed_or_the_counter_reset() -> None:
    flat = CounterStep(CounterSample(at(10, 10), 100.0), CounterSample(at(10, 20), 100.0))
    reset = CounterStep(CounterSample(at(10, 20), 100.0), CounterSample(at(10, 40), 2.0))
    rising = CounterStep(CounterSample(at(10, 40), 2.0), CounterSample(at(10, 50), 3.5))
    # 0.0 = measured nothing; a bucket no step covers would be "no data".
    assert flat.shares() == [(at(10, 0), 0.0), (at(10, 15), 0.0)]
    assert reset.shares() == [(at(10, 15), 0.0), (at(10, 30), 0.0)]
    assert [start for start, _ in rising.shares()] == [at(10, 30), at(10, 45)]
    assert [kwh for _, kwh in rising.shares()] == pytest.approx([0.75, 0.75])


def test_a_step_longer_than_a_day_is_a_gap_in_no_bucket() -> None:
    long = CounterStep(CounterSample(at(10), 1.0), CounterSample(at(10) + MAX_SPREAD_MS + 1, 9.0))
    day = CounterStep(CounterSample(at(10), 1.0), CounterSample(at(10) + MAX_SPREAD_MS, 9.0))
    assert (long.gap, day.gap) == (True, False)
    assert long.shares() == []
    assert len(day.shares()) == MAX_SPREAD_MS // SLOT_MS
    assert sum(share for _, share in day.shares()) == pytest.approx(8.0)
