"""A machine's P_off and P_load learned from its own history (domain.md, R10).

P_load: a two-component Gaussian mixture on the log of its kW above P_off, and P_load at the midpoint of
the idle and loaded means. A nameplate rating says little of what a machine draws at work (a 37 kW
compressor may run loaded at 12 kW), so a share of rated kW can call every loaded minute idle; the
machine's own two levels cannot. Where the history shows no two clear levels (a machine always loaded, or
always idle), the configured share of rated kW stands.

P_off: at least three times the meter's noise while the machine is off (domain.md's max(5 % of rated kW,
3x noise)), so a noisy reading of a stopped machine does not pass for idling. The noise is the spread of
the minute-to-minute steps between readings below the configured share, from their median (robust to the
rare real switch among them).

Each local day is judged with what the days before it taught (never the day itself or later ones), so
live data, a backlog and a backfill give the same states, and one day's waste does not move its own
threshold. Until `min_days` days of history exist the configured values stand.

Written here rather than with scikit-learn: a mixture of two Gaussians on a fixed histogram is a few
lines of numpy, fitted for every day of a year at once, where a library fit per day would cost a
second per machine-year and a dependency the collector does not otherwise need.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kilowatch.timebase import DAY_MS, OFFSET_MS

Floats = npt.NDArray[np.float64]

_BINS = 120
_ITERATIONS = 50
_CONVERGED = 1e-4
"""Stop once no mean moves more than this (log kW) in an iteration."""
_MIN_WEIGHT = 0.05
"""Each level must hold this share of the readings above P_off ..."""
_SEPARATION = 2.0
"""... and their means be this many (summed) standard deviations apart: two levels, not one spread."""
_STEP_BINS = 64
"""Bins of a step's size, from 0 to the configured P_off: a median known to 1/64 of it, ample where the
noise matters (three times it above P_off means a median step above a fifth of P_off)."""
_STEP_MAX_GAP_MS = 5 * 60_000
"""Steps between readings further apart than this are not noise."""
_MIN_STEPS = 1_440
"""Steps (a day of minutes) needed to say what the noise is."""
_MEDIAN_STEP_PER_SIGMA = 0.6745 * np.sqrt(2)
"""Median size of the step between two readings with independent Gaussian noise, in that noise's sigma."""


class _Days:
    """Each reading's local day (0 for the first), and sums over the `days` days before each day."""

    def __init__(self, ts: npt.NDArray[np.int64], days: int) -> None:
        day = (ts + OFFSET_MS) // DAY_MS
        self.index = (day - day[0]).astype(np.int64)
        self.count = int(self.index[-1]) + 1
        self.days = days
        seen = np.zeros(self.count)
        seen[self.index] = 1.0
        self.history_days = self.before(seen)
        """Days with data among those before each day."""

    def before(self, daily: Floats) -> Floats:
        """Per day, the sum of `daily` (a row per day) over the `days` days before it, not itself."""
        cumulative = np.concatenate([np.zeros((1, *daily.shape[1:])), np.cumsum(daily, axis=0)])
        ends = np.arange(self.count)
        result: Floats = cumulative[ends] - cumulative[np.maximum(0, ends - self.days)]
        return result

    def histograms_before(
        self, day: npt.NDArray[np.int64], bins: npt.NDArray[np.int64], width: int
    ) -> Floats:
        """Per day, the histogram (`width` bins) of values in bin `bins` on local day `day`, summed over
        the days before it."""
        daily = np.bincount(day * width + bins, minlength=self.count * width).reshape(self.count, width)
        return self.before(daily.astype(float))


def learned_off_kw(
    ts: npt.NDArray[np.int64], kw: Floats, floor: float, factor: float, days: int, min_days: int
) -> Floats:
    """P_off in kW at each reading: `floor`, or `factor` times the noise the `days` local days before its
    own showed below `floor` (at least `min_days` of them with data) where that is more."""
    if ts.size == 0 or factor == 0:
        return np.full(ts.size, floor)
    windows = _Days(ts, days)
    quiet = (kw[1:] < floor) & (kw[:-1] < floor) & (np.diff(ts) <= _STEP_MAX_GAP_MS)
    size = np.abs(np.diff(kw)[quiet])
    bins = np.minimum((size / floor * _STEP_BINS).astype(np.int64), _STEP_BINS - 1)
    hist = windows.histograms_before(windows.index[1:][quiet], bins, _STEP_BINS)
    steps = hist.sum(axis=1)
    median_bin = (np.cumsum(hist, axis=1) < steps[:, None] / 2).sum(axis=1)
    noise = (median_bin + 0.5) * floor / _STEP_BINS / _MEDIAN_STEP_PER_SIGMA
    known = (windows.history_days >= min_days) & (steps >= _MIN_STEPS)
    per_day = np.where(known, np.maximum(floor, factor * noise), floor)
    result: Floats = per_day[windows.index]
    return result


def learned_load_kw(
    ts: npt.NDArray[np.int64],
    kw: Floats,
    p_off: Floats,
    floor: float,
    fallback: float,
    rated_kw: float,
    days: int,
    min_days: int,
) -> Floats:
    """P_load in kW at each reading: learned from its readings above `p_off` (P_off at each reading) in
    the `days` local days before its own (at least `min_days` of them with data), else `fallback`.
    `floor` (the configured P_off) fixes the histogram's lower edge, the same for any window."""
    if ts.size == 0:
        return np.empty(0)
    windows = _Days(ts, days)
    lo, hi = np.log(floor), np.log(2 * max(rated_kw, floor * 2))
    above = kw > p_off
    bins = np.clip(((np.log(kw[above]) - lo) / (hi - lo) * _BINS).astype(np.int64), 0, _BINS - 1)
    hist = windows.histograms_before(windows.index[above], bins, _BINS)
    centres = lo + (np.arange(_BINS) + 0.5) * (hi - lo) / _BINS
    level = _midpoints(hist, centres, (hi - lo) / _BINS)
    per_day = np.where((windows.history_days >= min_days) & np.isfinite(level), np.exp(level), fallback)
    result: Floats = per_day[windows.index]
    return result


def _midpoints(hist: Floats, x: Floats, width: float) -> Floats:
    """Per row of `hist` (counts over bin centres `x`), the midpoint of the two means of a two-Gaussian
    fit by expectation-maximisation; NaN where the fit shows no two clear levels."""
    total = hist.sum(axis=1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    cdf = np.cumsum(hist, axis=1) / safe
    mean = np.stack([x[np.minimum((cdf < q).sum(axis=1), x.size - 1)] for q in (0.2, 0.8)], axis=1)
    spread = np.full_like(mean, (x[-1] - x[0]) / 8)
    weight = np.full_like(mean, 0.5)
    floor = width  # a level narrower than a bin is a bin wide
    for _ in range(_ITERATIONS):
        density = weight[:, :, None] * np.exp(-0.5 * ((x - mean[:, :, None]) / spread[:, :, None]) ** 2)
        density /= spread[:, :, None]
        share = density / np.maximum(density.sum(axis=1, keepdims=True), 1e-300)
        mass = (share * hist[:, None, :]).sum(axis=2)
        held = np.maximum(mass, 1e-12)
        moved, mean = mean, (share * hist[:, None, :] * x).sum(axis=2) / held
        spread = np.sqrt((share * hist[:, None, :] * (x - mean[:, :, None]) ** 2).sum(axis=2) / held)
        spread = np.maximum(spread, floor)
        weight = mass / safe
        if np.abs(mean - moved).max() < _CONVERGED:
            break
    low, high = mean.min(axis=1), mean.max(axis=1)
    clear = (
        (total[:, 0] > 0)
        & (weight.min(axis=1) >= _MIN_WEIGHT)
        & (high - low >= _SEPARATION * spread.sum(axis=1))
    )
    return np.where(clear, (low + high) / 2, np.nan)
