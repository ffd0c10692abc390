"""The quantity vocabulary: one canonical name per measured value, saying quantity, phase and unit.

Profiles map registers onto these names; the MQTT contract, the collector, the TSDB schema and the API
speak only them. This module is the single definition; everything else imports it.

Each quantity carries its physical range: generous bounds no real installation reaches (a 765 kV line,
a 10 GW plant, a counter of 10^12 kWh), so a value outside them is not a measurement but a decoding
error (wrong word order, the wrong unit answering, broken firmware). The agent sends such a value as
``bad`` and the MQTT contract never lets one through as a value (see :func:`out_of_range`).
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Kind(StrEnum):
    """How a quantity behaves over time, which decides how it may be aggregated."""

    INSTANT = "instant"
    """A momentary value (power, voltage): average or take the maximum, never sum."""
    COUNTER = "counter"
    """A cumulative register (energy): only differences between two readings mean consumption."""


class Quantity(BaseModel):
    """One entry of the vocabulary."""

    model_config = ConfigDict(frozen=True)

    name: str
    unit: str
    kind: Kind
    description: str
    minimum: float
    """Lowest physically possible value, in `unit`."""
    maximum: float
    """Highest physically possible value, in `unit`."""


VOLTAGE = (0.0, 1e6)
"""V: above any transmission line (765 kV) measured through a voltage transformer."""
CURRENT = (-1e6, 1e6)
"""A: above any busbar through a current transformer; signed, as some meters report direction."""
POWER = (-1e10, 1e10)
"""W, var, VA: above the largest power plant (~10 GW); signed (export, capacitive, meter conventions)."""
POWER_FACTOR = (-1.0, 1.0)
"""|P| / |S| cannot exceed 1; signed as the meter reports it."""
FREQUENCY = (0.0, 1000.0)
"""Hz: mains is 50/60 Hz, aircraft 400 Hz."""
COUNTER = (0.0, 1e12)
"""kWh, kvarh: a cumulative register never goes negative; 10^12 kWh is a 10 GW plant for 11,000 years."""


def _q(
    name: str, unit: str, bounds: tuple[float, float], description: str, kind: Kind = Kind.INSTANT
) -> Quantity:
    return Quantity(
        name=name, unit=unit, kind=kind, description=description, minimum=bounds[0], maximum=bounds[1]
    )


_PHASES = ("l1", "l2", "l3")
_LINE_PAIRS = ("l1_l2", "l2_l3", "l3_l1")

_ALL: list[Quantity] = [
    *(_q(f"voltage_{p}_v", "V", VOLTAGE, f"Phase {p.upper()} to neutral voltage") for p in _PHASES),
    *(_q(f"voltage_{p}_v", "V", VOLTAGE, f"Line {p.upper().replace('_', '-')} voltage") for p in _LINE_PAIRS),
    *(_q(f"current_{p}_a", "A", CURRENT, f"Phase {p.upper()} current") for p in _PHASES),
    _q("current_n_a", "A", CURRENT, "Neutral current"),
    _q("active_power_w", "W", POWER, "Total active power (positive = import)"),
    *(_q(f"active_power_{p}_w", "W", POWER, f"Phase {p.upper()} active power") for p in _PHASES),
    _q("reactive_power_var", "var", POWER, "Total reactive power"),
    *(_q(f"reactive_power_{p}_var", "var", POWER, f"Phase {p.upper()} reactive power") for p in _PHASES),
    _q("apparent_power_va", "VA", POWER, "Total apparent power"),
    *(_q(f"apparent_power_{p}_va", "VA", POWER, f"Phase {p.upper()} apparent power") for p in _PHASES),
    _q("power_factor", "1", POWER_FACTOR, "Total power factor (signed as the meter reports it)"),
    *(_q(f"power_factor_{p}", "1", POWER_FACTOR, f"Phase {p.upper()} power factor") for p in _PHASES),
    _q("frequency_hz", "Hz", FREQUENCY, "Supply frequency"),
    _q("energy_import_kwh", "kWh", COUNTER, "Imported active energy, cumulative", Kind.COUNTER),
    _q("energy_export_kwh", "kWh", COUNTER, "Exported active energy, cumulative", Kind.COUNTER),
    _q(
        "reactive_energy_import_kvarh", "kvarh", COUNTER, "Imported reactive energy, cumulative", Kind.COUNTER
    ),
    _q(
        "reactive_energy_export_kvarh", "kvarh", COUNTER, "Exported reactive energy, cumulative", Kind.COUNTER
    ),
]

QUANTITIES: dict[str, Quantity] = {q.name: q for q in _ALL}
"""Every canonical quantity by name."""

ENERGY_IMPORT = "energy_import_kwh"
ENERGY_EXPORT = "energy_export_kwh"
ACTIVE_POWER = "active_power_w"


def is_quantity(name: str) -> bool:
    """True when `name` is a canonical quantity name."""
    return name in QUANTITIES


def out_of_range(name: str, value: float) -> str | None:
    """Why `value` cannot be a real `name` (not finite, or outside its physical range); None if it can."""
    q = QUANTITIES[name]
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    if not q.minimum <= value <= q.maximum:
        return f"{value:g} {q.unit} is outside the physical range {q.minimum:g}..{q.maximum:g} {q.unit}"
    return None
