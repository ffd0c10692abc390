"""A machine's operating state (OFF / IDLE / LOADED) from its power, with hysteresis and a minimum dwell,
shared by the idle detector (R10) and the large-machine-in-peak rule (R9)."""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from collector.detectors.common import STEP_CODE, Step
from collector.detectors.config import Idle
from collector.detectors.load_level import Floats, learned_load_kw, learned_off_kw
from collector.detectors.series import Series, run_bounds


class State(StrEnum):
    OFF = "off"
    IDLE = "idle"
    LOADED = "loaded"
    UNKNOWN = "unknown"
    """No data: a silence longer than three polls."""


def thresholds(settings: Idle, rated_kw: float) -> tuple[float, float]:
    """(P_off, P_load) in kW as configured: P_load given, else a share of rated kW."""
    return settings.off_share * rated_kw, settings.load_kw or settings.load_share * rated_kw


def levels(settings: Idle, rated_kw: float, ts: npt.NDArray[np.int64], kw: Floats) -> tuple[Floats, Floats]:
    """(P_off, P_load) in kW at each reading: as configured, or learned from the machine's own days
    before (see :mod:`~collector.detectors.load_level`). The noise raises P_off to half of P_load at
    most, so that a meter too noisy to tell idling from off still tells loaded from either."""
    floor, p_load = thresholds(settings, rated_kw)
    if settings.learn_days is None:
        return np.full(ts.size, floor), np.full(ts.size, p_load)
    days, min_days = settings.learn_days, settings.learn_min_days
    p_off = learned_off_kw(ts, kw, floor, settings.off_noise_factor, days, min_days)
    if settings.load_kw is None:
        load = learned_load_kw(ts, kw, p_off, floor, p_load, rated_kw, days, min_days)
    else:
        load = np.full(ts.size, p_load)
    return np.maximum(floor, np.minimum(p_off, load / 2)), load


STATES = tuple(State)
"""Each state by its code in :func:`state_codes`' array."""
_UNKNOWN = STATES.index(State.UNKNOWN)


def state_codes(
    series: Series, settings: Idle, rated_kw: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    """(event time, state code) per usable reading, and an UNKNOWN one poll after the last reading before
    each silence. A state change needs the power past the other side's threshold by the hysteresis
    margin and held there for the dwell time; until then the old state stands (and the change is dated
    from when it began). Readings at the end of the data still awaiting the dwell are UNKNOWN: whether
    the state changed is not known yet, and saying so keeps live data and a backlog in agreement.

    Walks runs of readings whose power points the same way from every state, not readings: inside one,
    the state settles at once or switches when the dwell time is up."""
    ts, kw = series.usable_arrays
    p_off, p_load = levels(settings, rated_kw, ts, kw)
    margin = settings.hysteresis * p_load
    dwell = math.ceil(settings.dwell_min * 60_000)  # the same test on integer times; an int searches fast
    n = ts.size
    after_silence = np.flatnonzero(np.diff(ts) > 3 * series.poll_ms) + 1
    towards = [_candidates(kw, state, p_off, p_load, margin) for state in STATES]
    key = np.zeros(n, dtype=np.int16)  # the candidate from each state, two bits each
    for code, candidates in enumerate(towards):
        key |= candidates.astype(np.int16) << (2 * code)
    silent = np.zeros(n, dtype=np.bool_)
    silent[after_silence] = True
    starts, ends = run_bounds(n, (key[1:] != key[:-1]) | silent[1:])
    out = np.empty(n, dtype=np.int8)
    state = _UNKNOWN
    pending: tuple[int, int] | None = None  # (first index, candidate) of readings awaiting the dwell
    runs = zip(starts.tolist(), ends.tolist(), key[starts].tolist(), silent[starts].tolist(), strict=True)
    for a, b, run_key, gap in runs:
        if gap:
            if pending is not None:  # cut short by the silence: each keeps the state it pointed to
                out[pending[0] : a] = pending[1]
                pending = None
            state = _UNKNOWN
        k = a
        while k < b:
            candidate = run_key >> (2 * state) & 3
            if state == _UNKNOWN:
                state = candidate
                out[k] = state
                k += 1
                continue
            if candidate == state:
                if pending is not None:
                    out[pending[0] : k] = state
                    pending = None
                out[k:b] = state
                break
            if pending is not None and pending[1] != candidate:
                out[pending[0] : k] = state
                pending = None
            if pending is None:
                pending = (k, candidate)
            j = max(k, int(np.searchsorted(ts, ts[pending[0]] + dwell)))
            if j >= b:
                break
            state = candidate
            out[pending[0] : j + 1] = state
            pending = None
            k = j + 1
    if pending is not None:  # a change still within its dwell at the end: not known yet which state
        out[pending[0] :] = _UNKNOWN  # (later data settle it, dated from its start, the same either way)
    marks = ts[after_silence - 1] + series.poll_ms
    return np.insert(ts, after_silence, marks), np.insert(out, after_silence, _UNKNOWN)


def state_steps(
    series: Series, settings: Idle, rated_kw: float, bad: State
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8], Floats]:
    """For a rule about time spent in state `bad`: the event times of :func:`state_codes`, a step code at
    each (:data:`STEP_CODE`: BAD in that state, UNKNOWN without data, else GOOD) and the kW there (0 at
    the UNKNOWN mark after a silence)."""
    ts, codes = state_codes(series, settings, rated_kw)
    steps = np.full(codes.shape, STEP_CODE[Step.GOOD], dtype=np.int8)
    steps[codes == STATES.index(bad)] = STEP_CODE[Step.BAD]
    steps[codes == _UNKNOWN] = STEP_CODE[Step.UNKNOWN]
    usable_ts, usable_kw = series.usable_arrays
    at = np.minimum(np.searchsorted(usable_ts, ts), max(usable_ts.size - 1, 0))
    kw = np.where(usable_ts[at] == ts, usable_kw[at], 0.0) if usable_ts.size else np.zeros(ts.size)
    return ts, steps, kw


def _candidates(
    kw: Floats, state: State, p_off: Floats, p_load: Floats, margin: Floats
) -> npt.NDArray[np.int8]:
    """The code of the state each reading points to from `state` (thresholds and margin per reading):
    leaving a state takes `margin` beyond its threshold."""
    if state is State.UNKNOWN:
        margin = np.zeros_like(margin)
    loaded = kw >= p_load + (-margin if state is State.LOADED else margin)
    off = kw < p_off + (margin if state is State.OFF else -margin)
    code = np.full(kw.shape, STATES.index(State.IDLE), dtype=np.int8)
    code[off] = STATES.index(State.OFF)
    code[loaded] = STATES.index(State.LOADED)
    return code
