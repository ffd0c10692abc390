"""A load that grows or shrinks year on year: a unit's saving (or its growth) that reports must find."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sim.load_model import Demand, Times
from sim.loads import Load, Mode, Span

YEAR_MS = 365 * 86_400_000
"""The trend's year: the same calendar day a (non-leap) year later has changed by exactly the share."""


@dataclass(frozen=True)
class Trend:
    """`load` times (1 + `yearly_change`) ** (years since `since_ms`): -0.05 uses 5 % less each year."""

    load: Load
    yearly_change: float
    since_ms: int

    @property
    def rated_w(self) -> float:
        return self.load.rated_w

    @property
    def modes(self) -> frozenset[Mode]:
        return self.load.modes

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        demand = self.load.demand(ms, mode)
        factor = (1.0 + self.yearly_change) ** ((ms - self.since_ms) / YEAR_MS)
        return Demand(demand.active_w * factor, demand.power_factor)

    def spans(self, day: date) -> list[Span]:
        return self.load.spans(day)
