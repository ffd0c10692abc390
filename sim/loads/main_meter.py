"""A building's main meter sees every sub-metered circuit behind it, so parent minus children is the
losses (R11) plus what is not sub-metered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sim.load_model import Demand, Times, combine
from sim.loads import Load, Mode, Span


@dataclass(frozen=True)
class MainMeter:
    """A building's main meter: its own circuits plus every sub-metered one, and the cable losses between."""

    own: Load
    children: tuple[Load, ...]
    losses: float = 0.02

    @property
    def rated_w(self) -> float:
        return self.own.rated_w + sum(c.rated_w for c in self.children)

    @property
    def modes(self) -> frozenset[Mode]:
        return self.own.modes

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        return combine([self.own.demand(ms, mode), *(c.demand(ms) for c in self.children)], 1 + self.losses)

    def spans(self, day: date) -> list[Span]:
        return self.own.spans(day)
