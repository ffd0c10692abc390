"""Load models: what each kind of metered circuit draws, as pure functions of (time, seed, meter).

Every model offers the same three things: its rated power, its demand over an array of instants
(optionally forced into a `mode` an anomaly asks for, such as street lights burning by day), and the
labelled spans of one day where it varies the way real sites do and a naive detector would fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol

from sim.load_model import Demand, Times


class Mode(StrEnum):
    """A state an anomaly forces a load into, instead of what its schedule says."""

    ON = "on"
    OFF = "off"
    IDLE = "idle"
    LOADED = "loaded"
    UNCUT = "uncut"


class Category(StrEnum):
    ANOMALY = "anomaly"
    """Waste or a rule broken: a detector should alert."""
    BENIGN = "benign"
    """Normal variation or a short blip: a detector must not alert."""
    FAULT = "fault"
    """A metering or communication fault: data quality, not consumption."""


@dataclass(frozen=True)
class Span:
    """A labelled stretch of one meter's time: what happened, and how big it was."""

    kind: str
    category: Category
    start: datetime
    end: datetime
    magnitude: float
    unit: str


class Load(Protocol):
    @property
    def rated_w(self) -> float: ...

    @property
    def modes(self) -> frozenset[Mode]:
        """The modes an anomaly may force this load into."""
        ...

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        """What the circuit draws at each of `ms` (non-decreasing); each instant's value depends on that
        instant only, so one instant evaluated alone gives the number a day evaluated at once gives."""
        ...

    def spans(self, day: date) -> list[Span]:
        """Labelled variation on local `day` (benign, or waste the model itself carries)."""
        ...
