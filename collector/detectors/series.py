"""A meter's time series as the detectors see it: event-time power samples, 15-minute means and gaps.

Built the same way from live data, a flushed backlog or a backfill (samples are sorted by event time
and duplicates dropped), so a detector, a pure function of it, says the same thing in all three cases.
Where data is missing, frozen or stamped by an untrusted clock, intervals are ``None``: detectors treat
that as "unknown", which ends an episode instead of raising a false alarm.

The readings are numpy arrays so that a year of 1-minute readings is judged in well under a second:
everything per reading here (frozen runs, silences, interval means) is vectorised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from kilowatch.timebase import SLOT_MS

MIN_COVERAGE = 0.5
"""An interval needs samples over at least half of it to count."""

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


def run_bounds(n: int, breaks: Mask) -> tuple[Ints, Ints]:
    """[start, end) indexes of the runs of an `n`-long array, `breaks[i]` saying a new run begins at
    index i + 1."""
    starts = np.flatnonzero(np.concatenate(([n > 0], breaks)))
    return starts, np.append(starts[1:], n)[: starts.size]


@dataclass(frozen=True)
class Sample:
    ts: int
    kw: float
    energy_kwh: float | None = None


@dataclass(eq=False)
class Series:
    """One meter's good readings in event-time order over the observed span [start_ms, end_ms).

    `ts` is strictly increasing; `energy` is NaN where the meter gave no energy reading."""

    meter: str
    ts: Ints
    kw: Floats
    energy: Floats
    poll_ms: int
    start_ms: int
    end_ms: int
    untrusted: list[tuple[int, int]] = field(default_factory=list)
    """Spans whose readings were dropped because the gateway clock could not be trusted."""
    frozen_polls: int = 5

    @classmethod
    def of(
        cls,
        meter: str,
        samples: Iterable[Sample],
        *,
        poll_ms: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        untrusted: Sequence[tuple[int, int]] = (),
        frozen_polls: int = 5,
    ) -> Series:
        """From samples in any arrival order: sorted by event time, a repeated timestamp kept once (the
        last to arrive)."""
        listed = list(samples)
        return cls.from_arrays(
            meter,
            np.array([s.ts for s in listed], dtype=np.int64),
            np.array([s.kw for s in listed], dtype=np.float64),
            np.array([s.energy_kwh for s in listed], dtype=np.float64),  # None becomes NaN
            poll_ms=poll_ms, start_ms=start_ms, end_ms=end_ms, untrusted=untrusted,
            frozen_polls=frozen_polls,
        )  # fmt: skip

    @classmethod
    def from_arrays(
        cls,
        meter: str,
        ts: npt.ArrayLike,
        kw: npt.ArrayLike,
        energy: npt.ArrayLike,
        *,
        poll_ms: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        untrusted: Sequence[tuple[int, int]] = (),
        frozen_polls: int = 5,
    ) -> Series:
        """From parallel arrays (energy NaN where missing), as a backfill reads them: the same rules as
        :meth:`of` (sorted, the last of a repeated timestamp kept), without a Python object per reading."""
        t = np.asarray(ts, dtype=np.int64)
        w = np.asarray(kw, dtype=np.float64)
        e = np.asarray(energy, dtype=np.float64)
        if t.size and not bool(np.all(t[1:] > t[:-1])):
            order = np.argsort(t, kind="stable")
            t, w, e = t[order], w[order], e[order]
            last = np.append(t[1:] != t[:-1], True)  # a stable sort leaves the last arrival last
            t, w, e = t[last], w[last], e[last]
        first = int(t[0]) if t.size else 0
        after = int(t[-1]) + poll_ms if t.size else 0
        return cls(
            meter, t, w, e, poll_ms, first if start_ms is None else start_ms,
            after if end_ms is None else end_ms, list(untrusted), frozen_polls,
        )  # fmt: skip

    @cached_property
    def _frozen_runs(self) -> tuple[Ints, Ints]:
        """(first, last) indexes of the frozen runs: see :meth:`frozen`."""
        kw, energy = self.kw, self.energy
        same = (kw[1:] == kw[:-1]) & (energy[1:] == energy[:-1])  # NaN (no energy) never repeats
        starts, ends = run_bounds(kw.size, ~same)
        ends -= 1
        keep = (ends - starts + 1 >= self.frozen_polls) & ~np.isnan(energy[starts]) & (kw[starts] != 0)
        return starts[keep], ends[keep]

    def frozen(self) -> list[tuple[int, int]]:
        """[first, last] event times of runs of >= `frozen_polls` readings repeating the same power and
        energy: a meter whose registers stopped updating. (Real power always moves a little; a circuit
        switched off reads exactly 0 W with a still counter, which is not frozen.)"""
        starts, ends = self._frozen_runs
        return list(zip(self.ts[starts].tolist(), self.ts[ends].tolist(), strict=True))

    @cached_property
    def usable_arrays(self) -> tuple[Ints, Floats]:
        """(ts, kW) without frozen readings (untrusted ones never got in)."""
        starts, ends = self._frozen_runs
        frozen = np.zeros(self.ts.size + 1, dtype=np.int64)
        frozen[starts] += 1  # runs are disjoint: no index repeats within either assignment
        frozen[ends + 1] -= 1
        keep = np.cumsum(frozen[:-1]) == 0
        return self.ts[keep], self.kw[keep]

    @cached_property
    def usable(self) -> tuple[list[int], list[float]]:
        """:attr:`usable_arrays` as Python lists, for per-reading code."""
        ts, kw = self.usable_arrays
        return ts.tolist(), kw.tolist()

    def _silence_spans(self, polls: int) -> tuple[Ints, Ints]:
        ts, _ = self.usable_arrays
        edges = np.concatenate(([self.start_ms - self.poll_ms], ts, [self.end_ms])).astype(np.int64)
        gaps = np.flatnonzero(np.diff(edges) > polls * self.poll_ms)
        return edges[gaps] + self.poll_ms, edges[gaps + 1]

    def silences(self, polls: int) -> list[tuple[int, int]]:
        """[from, to) spans longer than `polls` poll intervals without a usable reading, including at the
        start and end of the observed span."""
        starts, ends = self._silence_spans(polls)
        return list(zip(starts.tolist(), ends.tolist(), strict=True))

    @cached_property
    def intervals(self) -> Intervals:
        """15-minute mean kW of usable readings; NaN where coverage is under half or a silence overlaps."""
        start = self.start_ms - self.start_ms % SLOT_MS
        count = max(0, -(-(self.end_ms - start) // SLOT_MS))
        ts, kw = self.usable_arrays
        slot = (ts - start) // SLOT_MS
        inside = (slot >= 0) & (slot < count)
        # bincount adds in reading order, as a running sum would: the same means to the last bit.
        sums = np.bincount(slot[inside], weights=kw[inside], minlength=count)
        hits = np.bincount(slot[inside], minlength=count)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(hits >= MIN_COVERAGE * SLOT_MS / self.poll_ms, sums / hits, np.nan)
        quiet_from, quiet_to = self._silence_spans(3)
        first = np.maximum(0, (quiet_from - start) // SLOT_MS)
        last = np.minimum(count, -(-(quiet_to - start) // SLOT_MS))
        spans = first < last
        silent = np.zeros(count + 1, dtype=np.int64)
        np.add.at(silent, first[spans], 1)
        np.add.at(silent, last[spans], -1)
        means[np.cumsum(silent[:-1]) > 0] = np.nan
        return Intervals(start, means)


@dataclass(frozen=True, eq=False)
class Intervals:
    """Consecutive 15-minute buckets from `start_ms` (UTC-aligned, which is local-aligned at UTC+7)."""

    start_ms: int
    mean_kw: Floats
    """Mean kW of each bucket, NaN where unknown."""

    @cached_property
    def kw(self) -> list[float | None]:
        """:attr:`mean_kw` with None where unknown, for per-interval code."""
        values: list[float | None] = list(self.mean_kw.tolist())
        for i in np.flatnonzero(np.isnan(self.mean_kw)).tolist():
            values[i] = None
        return values

    @cached_property
    def starts(self) -> Ints:
        """UTC ms each bucket starts."""
        return self.start_ms + SLOT_MS * np.arange(self.mean_kw.size, dtype=np.int64)

    def ts(self, i: int) -> int:
        return self.start_ms + i * SLOT_MS
