"""The vectorised series, episode tracking and machine states against the straightforward per-reading
rules they replace (kept here as oracles), on hand-made and random data: a backfill must find exactly
what a reading-by-reading pass would."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest

from collector.detectors.common import STEP_CODE, Episode, Step, episodes, episodes_of
from collector.detectors.config import Idle
from collector.detectors.series import Sample, Series
from collector.detectors.states import STATES, State, state_codes

MINUTE = 60_000
SLOT = 15 * MINUTE


def test_of_and_from_arrays_sort_and_keep_the_last_of_a_repeated_timestamp() -> None:
    samples = [Sample(3 * MINUTE, 3.0, None), Sample(MINUTE, 1.0, 10.0), Sample(3 * MINUTE, 4.0, 12.0)]
    of = Series.of("m", samples, poll_ms=MINUTE)
    arrays = Series.from_arrays(
        "m", [3 * MINUTE, MINUTE, 3 * MINUTE], [3.0, 1.0, 4.0], [np.nan, 10.0, 12.0], poll_ms=MINUTE
    )
    for s in (of, arrays):
        assert s.ts.tolist() == [MINUTE, 3 * MINUTE]
        assert s.kw.tolist() == [1.0, 4.0]
        assert s.energy.tolist() == [10.0, 12.0]
        assert (s.start_ms, s.end_ms) == (MINUTE, 4 * MINUTE)
    empty = Series.of("m", [], poll_ms=MINUTE, start_ms=0, end_ms=SLOT)
    assert empty.frozen() == []
    assert empty.silences(3) == [(0, SLOT)]
    assert empty.intervals.kw == [None]


def test_frozen_runs_silences_and_intervals() -> None:
    kw = [2.0] * 10 + [5.0] * 5 + [0.0] * 6 + [3.0 + i / 100 for i in range(29)]
    energy: list[float | None] = [i / 100 for i in range(10)] + [0.09] * 5 + [0.09] * 6 + [None] * 29
    ts = [i * MINUTE for i in range(50)]
    del ts[30:35], kw[30:35], energy[30:35]  # five minutes silent at 00:30
    s = Series.of("m", map(Sample, ts, kw, energy), poll_ms=MINUTE, end_ms=60 * MINUTE)
    # 5 kW owes the 0.01 kWh counter two steps within the run; 0 kW with a still counter is switched off.
    assert s.frozen() == [(10 * MINUTE, 14 * MINUTE, 14 * MINUTE)]
    assert s.usable == ([t for t in ts if not 10 * MINUTE <= t <= 14 * MINUTE], kw[:10] + kw[15:])
    assert s.silences(3) == [
        (10 * MINUTE, 15 * MINUTE),
        (30 * MINUTE, 35 * MINUTE),
        (50 * MINUTE, 60 * MINUTE),
    ]
    # Only 00:15 has no silence in it: six readings at 0 kW and nine at ~3 kW.
    assert s.intervals.kw == [None, pytest.approx(sum(kw[15:30]) / 15), None, None]
    assert np.isnan(s.intervals.mean_kw).tolist() == [True, False, True, True]
    assert s.intervals.starts.tolist() == [0, SLOT, 2 * SLOT, 3 * SLOT]


def _episodes_by_step(
    steps: list[tuple[int, Step]], step_ms: int, open_ms: int, clear_ms: int
) -> Iterator[Episode]:
    """The per-step rule, as it was written before runs of steps were walked instead."""
    first: tuple[int, int] | None = None
    detected: int | None = None
    good: tuple[int, int] | None = None
    last_bad = 0
    for i, (ts, step) in enumerate(steps):
        if step is Step.BAD:
            good = None
            first = first or (i, ts)
            last_bad = i + 1
            if detected is None and ts + step_ms - first[1] >= open_ms:
                detected = ts + step_ms
            continue
        if detected is None:
            first = None
            continue
        assert first is not None
        if step is Step.UNKNOWN:
            yield Episode(first[1], detected, ts, first[0], last_bad)
            first = detected = good = None
        elif step is Step.GOOD:
            good = good or (i, ts)
            if ts + step_ms - good[1] >= clear_ms:
                yield Episode(first[1], detected, good[1], first[0], last_bad)
                first = detected = good = None
        else:
            good = None
    if detected is not None and first is not None:
        yield Episode(first[1], detected, None, first[0], last_bad)


@pytest.mark.parametrize("seed", range(40))
def test_episodes_walked_by_runs_match_the_per_step_rule(seed: int) -> None:
    rng = random.Random(seed)
    steps: list[tuple[int, Step]] = []
    t = 0
    for _ in range(rng.randrange(400)):
        t += rng.choice((1, 1, 1, 2, 7))
        stay = steps and rng.random() < 0.8
        steps.append((t, steps[-1][1] if stay else rng.choice(list(Step))))
    ts = np.array([t for t, _ in steps], dtype=np.int64)
    codes = np.array([STEP_CODE[s] for _, s in steps], dtype=np.int8)
    for open_ms, clear_ms in ((0, 0), (1, 0), (4, 2), (9, 1), (20, 6)):
        expected = list(_episodes_by_step(steps, 1, open_ms, clear_ms))
        assert episodes_of(ts, codes, 1, open_ms, clear_ms) == expected
        assert list(episodes(steps, 1, open_ms, clear_ms)) == expected


def _states_by_reading(series: Series, settings: Idle, rated_kw: float) -> Iterator[tuple[int, State]]:
    """The per-reading state machine, as it was written before runs of readings were walked instead."""
    p_off, p_load = settings.off_share * rated_kw, settings.load_kw or settings.load_share * rated_kw
    margin, dwell = settings.hysteresis * p_load, settings.dwell_min * 60_000

    def classify(kw: float, state: State) -> State:
        m = 0.0 if state is State.UNKNOWN else margin
        if kw >= p_load + (-m if state is State.LOADED else m):
            return State.LOADED
        return State.OFF if kw < p_off + (m if state is State.OFF else -m) else State.IDLE

    ts, kw = series.usable
    state, pending, prev = State.UNKNOWN, list[tuple[int, State]](), None
    for t, w in zip(ts, kw, strict=True):
        if prev is not None and t - prev > 3 * series.poll_ms:
            yield from pending  # readings cut short by a silence keep the state they pointed to
            pending, state = [], State.UNKNOWN
            yield prev + series.poll_ms, State.UNKNOWN
        prev = t
        candidate = classify(w, state)
        if state is State.UNKNOWN:
            state = candidate
        if candidate is state:
            yield from ((pt, state) for pt, _ in pending)
            pending = []
            yield t, state
            continue
        if pending and pending[0][1] is not candidate:
            yield from ((pt, state) for pt, _ in pending)
            pending = []
        pending.append((t, candidate))
        if t - pending[0][0] >= dwell:
            state = candidate
            yield from ((pt, state) for pt, _ in pending)
            pending = []
    yield from ((pt, State.UNKNOWN) for pt, _ in pending)  # still within the dwell: not known yet


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    "settings",
    [Idle(), Idle(dwell_min=0), Idle(dwell_min=7.5, hysteresis=0.3), Idle(load_kw=0.6, off_share=0.08)],
)
def test_states_walked_by_runs_match_the_per_reading_machine(seed: int, settings: Idle) -> None:
    rng = random.Random(seed)
    samples, t, level = [], 0, 0.0
    for _ in range(3000):
        t += MINUTE * rng.choice((1, 1, 1, 1, 1, 1, 2, 4, 9)) + rng.randrange(-2000, 2000)
        if rng.random() < 0.02:
            level = rng.choice((0.0, 0.4, 0.5, 0.8, 2.7, 3.0, 3.3, 8.0))
        samples.append(Sample(t, level + rng.uniform(-0.4, 0.4), None))
    series = Series.of("m", samples, poll_ms=MINUTE)
    expected = list(_states_by_reading(series, settings, 10.0))
    ts, codes = state_codes(series, settings, 10.0)
    assert list(zip(ts.tolist(), [STATES[c] for c in codes.tolist()], strict=True)) == expected
