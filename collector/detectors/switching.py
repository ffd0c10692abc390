"""Load switched on or off between two polls: equipment shows as a step that the minute-to-minute noise
and a ramp (an end of day, a machine warming up) never make. A step over one poll, or over two when a
poll falls inside it."""

from __future__ import annotations

import numpy as np

from collector.detectors.series import Series


class Switching:
    """A meter's rises and falls between polls, found once per series."""

    def __init__(self, series: Series) -> None:
        ts, kw = series.usable_arrays
        self.ts = ts
        one = np.full(ts.size, np.nan)
        two = np.full(ts.size, np.nan)
        near = np.diff(ts) <= 1.5 * series.poll_ms
        one[1:] = np.where(near, np.diff(kw), np.nan)
        two[2:] = np.where(near[1:] & near[:-1], kw[2:] - kw[:-2], np.nan)
        self.rise = np.fmax(one, two)
        self.fall = np.fmax(-one, -two)
        self.kw = kw

    def _within(self, start: int, end: int) -> slice:
        a, b = np.searchsorted(self.ts, [start, end])
        return slice(int(a), int(b))

    def largest_rise(self, start: int, end: int) -> float:
        rises = self.rise[self._within(start, end)]
        return float(np.nanmax(rises)) if np.isfinite(rises).any() else 0.0

    def largest_share(self, start: int, end: int, floor: float) -> float:
        """The largest rise within [start, end) as a share of the load it rose from (at least `floor` kW):
        noise grows with the load, so a circuit's rises are compared at its own level."""
        part = self._within(start, end)
        shares = self.rise[part] / np.maximum(self.kw[part] - self.rise[part], floor)
        return float(np.nanmax(shares)) if np.isfinite(shares).any() else 0.0

    def switched_on(
        self, start: int, end: int, least: float, share: float = 0.0
    ) -> list[tuple[int, int, float]]:
        """[on, off) spans within [start, end) of load switched on, with the rise (kW) that began each:
        a rise of `least` kW or more and of `share` of the load it rose from, until a fall of half that
        rise."""
        part = self._within(start, end)
        ts, rise, fall = self.ts[part], self.rise[part], self.fall[part]
        relative = rise / np.maximum(self.kw[part] - rise, max(least, 1e-9))
        spans = []
        j = 0
        while (ons := np.flatnonzero((rise[j:] >= least) & (relative[j:] >= share))).size:
            on = j + int(ons[0])
            offs = np.flatnonzero(fall[on + 1 :] >= rise[on] / 2)
            off = on + 1 + int(offs[0]) if offs.size else ts.size
            spans.append((int(ts[on]), int(ts[off]) if off < ts.size else end, float(rise[on])))
            j = off + 1
        return spans
