"""Anomalies a scenario injects, each with its ground-truth label: waste a detector must find, benign
blips it must ignore, and metering faults its data-quality checks must notice.

Load anomalies change what the circuit draws (extra power, or a forced state such as street lights
burning by day); faults change what reaches the dataset (silence, errors, frozen or reset counters, a
gateway clock that jumps) and are applied by the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

import numpy as np

from sim.load_model import Demand, Times, combine, instants, split
from sim.loads import Category, Load, Mode, Span


class AnomalyKind(StrEnum):
    AFTER_HOURS_WASTE = "after_hours_waste"
    IDLE_EQUIPMENT = "idle_equipment"
    PEAK_OVERUSE = "peak_overuse"
    MACHINE_PEAK_LOADED = "machine_peak_loaded"
    LIGHTS_ON_BY_DAY = "lights_on_by_day"
    LIGHTS_DARK_AT_NIGHT = "lights_dark_at_night"
    AD_NOT_CUT = "ad_not_cut"
    BLIP = "blip"
    SILENT = "silent"
    SLOW = "slow"
    CRC = "crc"
    EXCEPTION = "exception"
    COUNTER_RESET = "counter_reset"
    METER_REPLACEMENT = "meter_replacement"
    FROZEN = "frozen"
    CLOCK_JUMP = "clock_jump"


@dataclass(frozen=True)
class Effect:
    """What an anomaly does to a load: force a mode, or add power (W) at an inductive power factor."""

    models: frozenset[str]
    """The meter models it applies to (empty: any)."""
    mode: Mode | None = None


LOAD_EFFECTS: dict[AnomalyKind, Effect] = {
    AnomalyKind.AFTER_HOURS_WASTE: Effect(frozenset({"office"})),
    AnomalyKind.PEAK_OVERUSE: Effect(frozenset({"office", "machine"})),
    AnomalyKind.BLIP: Effect(frozenset()),
    AnomalyKind.IDLE_EQUIPMENT: Effect(frozenset({"machine"}), Mode.IDLE),
    AnomalyKind.MACHINE_PEAK_LOADED: Effect(frozenset({"machine"}), Mode.LOADED),
    AnomalyKind.LIGHTS_ON_BY_DAY: Effect(frozenset({"lighting_cabinet"}), Mode.ON),
    AnomalyKind.LIGHTS_DARK_AT_NIGHT: Effect(frozenset({"lighting_cabinet"}), Mode.OFF),
    AnomalyKind.AD_NOT_CUT: Effect(frozenset({"advertising"}), Mode.UNCUT),
}
"""Anomalies that change the load; the others are faults."""

GATEWAY_FAULTS = frozenset({AnomalyKind.CLOCK_JUMP})
"""Faults of a gateway rather than of one meter."""

BLIP_MAX_S = 600
"""A blip lasts at most ten minutes: shorter than any detector's minimum duration."""


def category(kind: AnomalyKind) -> Category:
    if kind is AnomalyKind.BLIP:
        return Category.BENIGN
    return Category.ANOMALY if kind in LOAD_EFFECTS else Category.FAULT


@dataclass(frozen=True)
class Injection:
    """One anomaly placed on one meter's timeline."""

    kind: AnomalyKind
    start: datetime
    end: datetime
    extra_w: float = 0.0


@dataclass(frozen=True)
class Injected:
    """A load with anomalies injected: inside an injection's window it is forced or carries extra power."""

    base: Load
    injections: tuple[Injection, ...]
    key: str

    @property
    def rated_w(self) -> float:
        return self.base.rated_w

    @property
    def modes(self) -> frozenset[Mode]:
        return self.base.modes

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        """The base load, replaced inside each injection's window (the first listed wins where they overlap)."""
        demand = self.base.demand(ms, mode)
        active, power_factor = demand.active_w.copy(), demand.power_factor.copy()
        free = np.ones(len(ms), dtype=np.bool_)
        for injection in self.injections:
            start, end = instants(injection.start, injection.end)
            inside = free & (ms >= start) & (ms < end)
            if not inside.any():
                continue
            free &= ~inside
            effect = LOAD_EFFECTS[injection.kind]
            if effect.mode is not None:
                forced = self.base.demand(ms[inside], effect.mode)
            else:
                extra = split(
                    ms[inside], [(injection.extra_w, 0.86)], (1 / 3, 1 / 3, 1 / 3), self.key, "extra"
                )
                forced = combine([demand[inside], extra])
            active[:, inside], power_factor[:, inside] = forced.active_w, forced.power_factor
        return Demand(active, power_factor)

    def spans(self, day: date) -> list[Span]:
        return self.base.spans(day)


CRC_FAILURE_SHARE = 0.3
"""Share of polls a noisy line (a `crc` fault) spoils, served live or generated."""
