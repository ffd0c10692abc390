"""A meter's time series as the detectors see it: event-time power samples, 15-minute means and gaps.

Built the same way from live data, a flushed backlog or a backfill (samples are sorted by event time
and duplicates dropped), so a detector, a pure function of it, says the same thing in all three cases.
Where data is missing, frozen or stamped by an untrusted clock, intervals are ``None``: detectors treat
that as "unknown", which ends an episode instead of raising a false alarm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise

from collector.calendars import SLOT_MS

MIN_COVERAGE = 0.5
"""An interval needs samples over at least half of it to count."""


@dataclass(frozen=True)
class Sample:
    ts: int
    kw: float
    energy_kwh: float | None = None


@dataclass
class Series:
    """One meter's good readings in event-time order over the observed span [start_ms, end_ms)."""

    meter: str
    ts: list[int]
    kw: list[float]
    energy: list[float | None]
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
        """From samples in any arrival order: sorted by event time, a repeated timestamp kept once."""
        by_ts = {s.ts: s for s in samples}
        ordered = [by_ts[t] for t in sorted(by_ts)]
        first = ordered[0].ts if ordered else 0
        last = ordered[-1].ts + poll_ms if ordered else 0
        return cls(
            meter, [s.ts for s in ordered], [s.kw for s in ordered], [s.energy_kwh for s in ordered],
            poll_ms, first if start_ms is None else start_ms, last if end_ms is None else end_ms,
            list(untrusted), frozen_polls,
        )  # fmt: skip

    def frozen(self) -> list[tuple[int, int]]:
        """[first, last] event times of runs of >= `frozen_polls` readings repeating the same power and
        energy: a meter whose registers stopped updating. (Real power always moves a little; a circuit
        switched off reads exactly 0 W with a still counter, which is not frozen.)"""
        runs, i, n = [], 0, len(self.ts)
        while i < n:
            j = i
            while j + 1 < n and self.kw[j + 1] == self.kw[i] and self.energy[j + 1] == self.energy[i]:
                j += 1
            if j - i + 1 >= self.frozen_polls and self.energy[i] is not None and self.kw[i] != 0:
                runs.append((self.ts[i], self.ts[j]))
            i = j + 1
        return runs

    @cached_property
    def usable(self) -> tuple[list[int], list[float]]:
        """(ts, kW) without frozen readings (untrusted ones never got in)."""
        frozen = self.frozen()
        if not frozen:
            return self.ts, self.kw
        keep = [not any(a <= t <= b for a, b in frozen) for t in self.ts]
        return (
            [t for t, k in zip(self.ts, keep, strict=True) if k],
            [w for w, k in zip(self.kw, keep, strict=True) if k],
        )

    def silences(self, polls: int) -> list[tuple[int, int]]:
        """[from, to) spans longer than `polls` poll intervals without a usable reading, including at the
        start and end of the observed span."""
        ts, _ = self.usable
        limit = polls * self.poll_ms
        edges = [self.start_ms - self.poll_ms, *ts, self.end_ms]
        return [(a + self.poll_ms, b) for a, b in pairwise(edges) if b - a > limit]

    @cached_property
    def intervals(self) -> Intervals:
        """15-minute mean kW of usable readings; None where coverage is under half or a silence overlaps."""
        start = self.start_ms - self.start_ms % SLOT_MS
        count = max(0, -(-(self.end_ms - start) // SLOT_MS))
        sums = [0.0] * count
        hits = [0] * count
        ts, kw = self.usable
        for t, w in zip(ts, kw, strict=True):
            i = (t - start) // SLOT_MS
            if 0 <= i < count:
                sums[i] += w
                hits[i] += 1
        needed = MIN_COVERAGE * SLOT_MS / self.poll_ms
        values: list[float | None] = [s / h if h >= needed else None for s, h in zip(sums, hits, strict=True)]
        for a, b in self.silences(3):
            for i in range(max(0, (a - start) // SLOT_MS), min(count, -(-(b - start) // SLOT_MS))):
                values[i] = None
        return Intervals(start, values)


@dataclass(frozen=True)
class Intervals:
    """Consecutive 15-minute buckets from `start_ms` (UTC-aligned, which is local-aligned at UTC+7)."""

    start_ms: int
    kw: list[float | None]

    def ts(self, i: int) -> int:
        return self.start_ms + i * SLOT_MS
