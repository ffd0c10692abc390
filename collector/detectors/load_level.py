"""P_load learned from a machine's own history (domain.md, R10): a two-component Gaussian mixture on the
log of its kW above P_off, and P_load at the midpoint of the idle and loaded means.

A nameplate rating says little of what a machine draws at work (a 37 kW compressor may run loaded at
12 kW), so a share of rated kW can call every loaded minute idle; the machine's own two levels cannot.
Each local day is judged with what the days before it taught (never the day itself or later ones), so
live data, a backlog and a backfill give the same states, and one day's waste does not move its own
threshold. Until `learn_min_days` days of history exist, or where they show no two clear levels (a
machine always loaded, or always idle), the configured share of rated kW stands.

Written here rather than with scikit-learn: a mixture of two Gaussians on a fixed histogram is a few
lines of numpy, fitted for every day of a year at once, where a library fit per day would cost a
second per machine-year and a dependency the collector does not otherwise need.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from collector.calendars import DAY_MS, OFFSET_MS

Floats = npt.NDArray[np.float64]

_BINS = 120
_ITERATIONS = 50
_CONVERGED = 1e-4
"""Stop once no mean moves more than this (log kW) in an iteration."""
_MIN_WEIGHT = 0.05
"""Each level must hold this share of the readings above P_off ..."""
_SEPARATION = 2.0
"""... and their means be this many (summed) standard deviations apart: two levels, not one spread."""


def learned_load_kw(
    ts: npt.NDArray[np.int64],
    kw: Floats,
    p_off: float,
    fallback: float,
    rated_kw: float,
    days: int,
    min_days: int,
) -> Floats:
    """P_load in kW at each reading: learned from the `days` local days before its own (at least
    `min_days` of them with data), else `fallback`."""
    if ts.size == 0:
        return np.empty(0)
    day = (ts + OFFSET_MS) // DAY_MS
    first = int(day[0])
    index = (day - first).astype(np.int64)
    n = int(index[-1]) + 1
    lo, hi = np.log(p_off), np.log(2 * max(rated_kw, p_off * 2))  # fixed edges: the same for any window
    above = kw > p_off
    bins = np.clip(((np.log(kw[above]) - lo) / (hi - lo) * _BINS).astype(np.int64), 0, _BINS - 1)
    daily = np.bincount(index[above] * _BINS + bins, minlength=n * _BINS).reshape(n, _BINS).astype(float)
    seen = np.zeros(n)
    seen[np.unique(index)] = 1.0
    # Trailing sums over the `days` days before each day (exclusive of it).
    cumulative = np.vstack([np.zeros((1, _BINS)), np.cumsum(daily, axis=0)])
    cumulative_seen = np.concatenate([[0.0], np.cumsum(seen)])
    ends = np.arange(n)
    starts = np.maximum(0, ends - days)
    hist = cumulative[ends] - cumulative[starts]
    history_days = cumulative_seen[ends] - cumulative_seen[starts]
    centres = lo + (np.arange(_BINS) + 0.5) * (hi - lo) / _BINS
    level = _midpoints(hist, centres, (hi - lo) / _BINS)
    per_day = np.where((history_days >= min_days) & np.isfinite(level), np.exp(level), fallback)
    result: Floats = per_day[index]
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
