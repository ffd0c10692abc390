"""A machine's operating state (OFF / IDLE / LOADED) from its power, with hysteresis and a minimum dwell,
shared by the idle detector (R10) and the large-machine-in-peak rule (R9)."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

from collector.detectors.config import Idle
from collector.detectors.series import Series


class State(StrEnum):
    OFF = "off"
    IDLE = "idle"
    LOADED = "loaded"
    UNKNOWN = "unknown"
    """No data: a silence longer than three polls."""


def thresholds(settings: Idle, rated_kw: float) -> tuple[float, float]:
    """(P_off, P_load) in kW."""
    return settings.off_share * rated_kw, settings.load_kw or settings.load_share * rated_kw


def states(series: Series, settings: Idle, rated_kw: float) -> Iterator[tuple[int, State]]:
    """(event time, state) per usable reading. A state change needs the power past the other side's
    threshold by the hysteresis margin and held there for the dwell time; until then the old state
    stands (and the change is dated from when it began)."""
    p_off, p_load = thresholds(settings, rated_kw)
    margin = settings.hysteresis * p_load
    dwell = settings.dwell_min * 60_000
    silence = 3 * series.poll_ms
    ts, kw = series.usable
    state = State.UNKNOWN
    pending: list[tuple[int, State]] = []
    prev = None
    for t, w in zip(ts, kw, strict=True):
        if prev is not None and t - prev > silence:
            yield from pending
            pending = []
            state = State.UNKNOWN
            yield prev + series.poll_ms, State.UNKNOWN
        prev = t
        candidate = _classify(w, state, p_off, p_load, margin)
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
    yield from ((pt, state) for pt, _ in pending)


def _classify(kw: float, state: State, p_off: float, p_load: float, margin: float) -> State:
    """The state `kw` points to from `state`: leaving a state takes `margin` beyond its threshold."""
    if state is State.UNKNOWN:
        margin = 0.0
    if kw >= p_load + (-margin if state is State.LOADED else margin):
        return State.LOADED
    if kw < p_off + (margin if state is State.OFF else -margin):
        return State.OFF
    return State.IDLE
