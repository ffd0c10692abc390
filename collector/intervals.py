"""Interval energy from cumulative counters: pure arithmetic, no database.

A meter's energy register only says how much has flowed since it was installed; consumption is the
difference between two readings. That difference is spread linearly over the 15-minute buckets the two
readings span, so a reading at 10:14 and one at 10:16 give the 10:00 and the 10:15 bucket half each.
A counter that goes backwards (a reset, a replaced meter) is a :class:`CounterStep` with ``reset`` set and
contributes nothing, never negative energy. A step longer than :data:`MAX_SPREAD_MS` is a ``gap``: when
the energy flowed is unknown, so it is not put in any bucket (and a reading stamped years off cannot make
the ledger write a row for every quarter hour in between).

Buckets are the 15-minute slots of :mod:`kilowatch.timebase`; what counts as going backwards is
:func:`kilowatch.counters.went_backwards`.
"""

from __future__ import annotations

from typing import NamedTuple

from kilowatch.counters import went_backwards
from kilowatch.timebase import DAY_MS, SLOT_MS, bucket_start

MAX_SPREAD_MS = DAY_MS
"""The longest step whose energy is spread over buckets; a longer one is a gap."""
STEP_SLACK_KWH = 1.0
"""What a counter may rise beyond what its meter's maximum power could deliver: the resolution of coarse
registers (a meter counting whole kWh may show +1 a second after the last one)."""


def spread(start_ms: int, end_ms: int, amount: float) -> list[tuple[int, float]]:
    """Share `amount`, accrued from `start_ms` to `end_ms`, over the buckets that span covers.

    Each bucket gets the fraction of the span that falls inside it; a span within one bucket (most steps
    between two readings) gives it the whole amount.
    """
    if end_ms <= start_ms:
        raise ValueError(f"span must move forward: start {start_ms} >= end {end_ms}")
    bucket = bucket_start(start_ms)
    if end_ms <= bucket + SLOT_MS:
        return [(bucket, amount)]
    span = end_ms - start_ms
    shares = []
    while bucket < end_ms:
        overlap = min(bucket + SLOT_MS, end_ms) - max(bucket, start_ms)
        shares.append((bucket, amount * overlap / span))
        bucket += SLOT_MS
    return shares


class CounterSample(NamedTuple):
    """One reading of one cumulative counter (a named tuple: the ledger makes one per counter reading)."""

    ts: int
    value: float


class CounterStep:
    """Two consecutive readings of one counter, and what the step between them is.

    Worked out once, when the step is made: the ledger asks a step of each counter reading whether it is
    plausible, what it puts in which bucket and whether it is a counter event (properties computing
    these afresh at each question were a tenth of the ledger's work per reading).
    """

    __slots__ = ("end", "energy", "gap", "reset", "start")

    start: CounterSample
    end: CounterSample
    reset: bool
    """The counter went backwards: the meter was reset or replaced."""
    gap: bool
    """Too long between the readings to say when the energy flowed."""
    energy: float
    """What flowed between the two readings; 0 across a reset (the amount before it is unknown) and for a
    step back within the tolerance (rounding, not consumption)."""

    def __init__(self, start: CounterSample, end: CounterSample) -> None:
        self.start = start
        self.end = end
        self.reset = went_backwards(start.value, end.value)
        self.gap = end.ts - start.ts > MAX_SPREAD_MS
        self.energy = 0.0 if self.reset else max(end.value - start.value, 0.0)

    def implausible(self, max_kw: float) -> str | None:
        """Why the counter cannot have risen this much: more than `max_kw` could deliver in the time
        between the readings (plus :data:`STEP_SLACK_KWH`); None when it could. A reset or a gap books
        nothing, so it is not judged here."""
        if self.reset or self.gap:
            return None
        seconds = (self.end.ts - self.start.ts) / 1000
        allowed = max_kw * seconds / 3600 + STEP_SLACK_KWH
        if self.energy <= allowed:
            return None
        return (
            f"the counter rose {self.energy:.6g} in {seconds:g} s, more than {max_kw:g} kW can deliver "
            f"({allowed:.6g})"
        )

    def shares(self) -> list[tuple[int, float]]:
        """The step's energy per bucket it covers; a gap covers none.

        A covered bucket appears even when nothing flowed (0.0 = measured nothing, also across a reset),
        so a missing bucket means "no data" rather than "no consumption".
        """
        return [] if self.gap else spread(self.start.ts, self.end.ts, self.energy)
