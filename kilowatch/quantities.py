"""The quantity vocabulary: one canonical name per measured value, saying quantity, phase and unit.

Profiles map registers onto these names; the MQTT contract, the collector, the TSDB schema and the API
speak only them. This module is the single definition; everything else imports it.
"""

from __future__ import annotations

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


def _q(name: str, unit: str, description: str, kind: Kind = Kind.INSTANT) -> Quantity:
    return Quantity(name=name, unit=unit, kind=kind, description=description)


_PHASES = ("l1", "l2", "l3")
_LINE_PAIRS = ("l1_l2", "l2_l3", "l3_l1")

_ALL: list[Quantity] = [
    *(_q(f"voltage_{p}_v", "V", f"Phase {p.upper()} to neutral voltage") for p in _PHASES),
    *(_q(f"voltage_{p}_v", "V", f"Line {p.upper().replace('_', '-')} voltage") for p in _LINE_PAIRS),
    *(_q(f"current_{p}_a", "A", f"Phase {p.upper()} current") for p in _PHASES),
    _q("current_n_a", "A", "Neutral current"),
    _q("active_power_w", "W", "Total active power (positive = import)"),
    *(_q(f"active_power_{p}_w", "W", f"Phase {p.upper()} active power") for p in _PHASES),
    _q("reactive_power_var", "var", "Total reactive power"),
    *(_q(f"reactive_power_{p}_var", "var", f"Phase {p.upper()} reactive power") for p in _PHASES),
    _q("apparent_power_va", "VA", "Total apparent power"),
    *(_q(f"apparent_power_{p}_va", "VA", f"Phase {p.upper()} apparent power") for p in _PHASES),
    _q("power_factor", "1", "Total power factor (signed as the meter reports it)"),
    *(_q(f"power_factor_{p}", "1", f"Phase {p.upper()} power factor") for p in _PHASES),
    _q("frequency_hz", "Hz", "Supply frequency"),
    _q("energy_import_kwh", "kWh", "Imported active energy, cumulative", Kind.COUNTER),
    _q("energy_export_kwh", "kWh", "Exported active energy, cumulative", Kind.COUNTER),
    _q("reactive_energy_import_kvarh", "kvarh", "Imported reactive energy, cumulative", Kind.COUNTER),
    _q("reactive_energy_export_kvarh", "kvarh", "Exported reactive energy, cumulative", Kind.COUNTER),
]

QUANTITIES: dict[str, Quantity] = {q.name: q for q in _ALL}
"""Every canonical quantity by name."""

ENERGY_IMPORT = "energy_import_kwh"
ENERGY_EXPORT = "energy_export_kwh"
ACTIVE_POWER = "active_power_w"


def is_quantity(name: str) -> bool:
    """True when `name` is a canonical quantity name."""
    return name in QUANTITIES
