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

from kilowatch.timebase import HOUR_MS, SLOT_MS

MIN_COVERAGE = 0.5
"""An interval needs samples over at least half of it to count."""

MOVING = (
    "voltage_l1_v",
    "voltage_l2_v",
    "voltage_l3_v",
    "frequency_hz",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
)
"""Measured quantities that move from one reading to the next on a live supply (a meter's registers that
stopped updating repeat them exactly): what tells a frozen meter from a steady low load."""

COUNTER_STEPS_TO_MOVE = 2
"""A counter that should have counted this many of its steps over a run of repeated readings, yet did not,
is stuck (one step may not be crossed yet, depending on where in its step the counter stood)."""

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
    moving: tuple[float | None, ...] = ()
    """The :data:`MOVING` quantities the reading carried, in that order (None where missing)."""


@dataclass(eq=False)
class Series:
    """One meter's good readings in event-time order over the observed span [start_ms, end_ms).

    `ts` is strictly increasing; `energy` is NaN where the meter gave no energy reading; `moving` has a
    row per reading and a column per :data:`MOVING` quantity known (none when only power and energy are),
    NaN where missing."""

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
    moving: Floats = field(default_factory=lambda: np.empty((0, 0)))

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
        width = max((len(s.moving) for s in listed), default=0)
        moving = np.array(
            [(*s.moving, *(None,) * (width - len(s.moving))) for s in listed], dtype=np.float64
        ).reshape(len(listed), width)  # None becomes NaN
        return cls.from_arrays(
            meter,
            np.array([s.ts for s in listed], dtype=np.int64),
            np.array([s.kw for s in listed], dtype=np.float64),
            np.array([s.energy_kwh for s in listed], dtype=np.float64),  # None becomes NaN
            poll_ms=poll_ms, start_ms=start_ms, end_ms=end_ms, untrusted=untrusted,
            frozen_polls=frozen_polls, moving=moving,
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
        moving: npt.ArrayLike | None = None,
    ) -> Series:
        """From parallel arrays (energy NaN where missing; `moving` a row per reading, see the class), as a
        backfill reads them: the same rules as :meth:`of` (sorted, the last of a repeated timestamp kept),
        without a Python object per reading."""
        t = np.asarray(ts, dtype=np.int64)
        w = np.asarray(kw, dtype=np.float64)
        e = np.asarray(energy, dtype=np.float64)
        m = np.empty((t.size, 0)) if moving is None else np.asarray(moving, dtype=np.float64)
        if t.size and not bool(np.all(t[1:] > t[:-1])):
            order = np.argsort(t, kind="stable")
            t, w, e, m = t[order], w[order], e[order], m[order]
            last = np.append(t[1:] != t[:-1], True)  # a stable sort leaves the last arrival last
            t, w, e, m = t[last], w[last], e[last], m[last]
        first = int(t[0]) if t.size else 0
        after = int(t[-1]) + poll_ms if t.size else 0
        return cls(
            meter, t, w, e, poll_ms, first if start_ms is None else start_ms,
            after if end_ms is None else end_ms, list(untrusted), frozen_polls, m,
        )  # fmt: skip

    @cached_property
    def energy_step(self) -> float:
        """The smallest step the energy counter was seen to take (its resolution); inf if it never moved."""
        steps = np.diff(self.energy)
        steps = steps[steps > 0]  # NaN compares False
        return float(steps.min()) if steps.size else float("inf")

    @cached_property
    def _frozen_runs(self) -> tuple[Ints, Ints, Ints]:
        """(first, last, first index at which it is certain) of the frozen runs: see :meth:`frozen`."""
        kw, energy, moving = self.kw, self.energy, self.moving
        same = (kw[1:] == kw[:-1]) & (energy[1:] == energy[:-1])  # NaN (no energy) never repeats
        if moving.shape[1]:
            a, b = moving[1:], moving[:-1]
            same &= np.all((a == b) | (np.isnan(a) & np.isnan(b)), axis=1)
        starts, ends = run_bounds(kw.size, ~same)
        ends -= 1
        long = (ends - starts + 1 >= self.frozen_polls) & ~np.isnan(energy[starts])
        starts, ends = starts[long], ends[long]
        # Evidence the registers should have changed: a live supply's voltage, frequency or current...
        if moving.shape[1]:
            live = np.nan_to_num(np.abs(moving[starts])).max(axis=1, initial=0.0) > 0
        else:
            live = np.zeros(starts.size, dtype=np.bool_)
        # ... or a counter that should have counted COUNTER_STEPS_TO_MOVE of its steps at this power.
        power = np.abs(kw[starts])
        with np.errstate(divide="ignore", invalid="ignore"):
            needed = np.where(power > 0, COUNTER_STEPS_TO_MOVE * self.energy_step / power * HOUR_MS, np.inf)
        counted = self.ts[starts] + needed <= self.ts[ends]
        first_long = starts + self.frozen_polls - 1
        certain = np.where(
            live,
            first_long,
            np.maximum(first_long, np.searchsorted(self.ts, self.ts[starts] + np.minimum(needed, 2**62))),
        )
        keep = live | counted
        return starts[keep], ends[keep], certain[keep]

    def frozen(self) -> list[tuple[int, int, int]]:
        """[first, last] event times of runs of >= `frozen_polls` readings repeating every quantity (power,
        energy, and the :data:`MOVING` ones the meter reports), with the time of the reading from which the
        run is certainly frozen: a meter whose registers stopped updating. Repeating alone proves
        nothing at a low, steady load shown in whole watts with a counter that cannot count a step in that
        time; a run is frozen only when a measured quantity of a live supply (voltage, frequency, current)
        stands still too, or the counter should have counted :data:`COUNTER_STEPS_TO_MOVE` steps at this
        power. (A circuit switched off and metered without voltage reads 0 W with a still counter: not
        frozen.)"""
        starts, ends, certain = self._frozen_runs
        ts = self.ts
        return list(zip(ts[starts].tolist(), ts[ends].tolist(), ts[certain].tolist(), strict=True))

    @cached_property
    def usable_arrays(self) -> tuple[Ints, Floats]:
        """(ts, kW) without frozen readings (untrusted ones never got in)."""
        starts, ends, _ = self._frozen_runs
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
