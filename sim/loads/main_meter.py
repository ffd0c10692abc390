"""A building's main meter sees every sub-metered circuit behind it, so parent minus children is the
losses (R11) plus what is not sub-metered; a feeder (no circuit of its own) sees the losses alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sim.load_model import Demand, Times, combine
from sim.loads import Load, Mode, Span


@dataclass(frozen=True)
class MainMeter:
    """A building's main meter: its own circuits (None: a feeder, which has none) plus every sub-metered
    one, and the cable losses between, as a share of what they draw."""

    own: Load | None
    children: tuple[Load, ...]
    losses: float = 0.02

    @property
    def rated_w(self) -> float:
        return (self.own.rated_w if self.own else 0.0) + sum(c.rated_w for c in self.children)

    @property
    def modes(self) -> frozenset[Mode]:
        return self.own.modes if self.own else frozenset()

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        own = [self.own.demand(ms, mode)] if self.own else []
        return combine([*own, *(c.demand(ms) for c in self.children)], 1 + self.losses)

    def spans(self, day: date) -> list[Span]:
        return self.own.spans(day) if self.own else []
