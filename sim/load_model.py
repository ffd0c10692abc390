"""The electricity demand of a Vietnamese public office and the supply it draws from, as pure functions.

A public office in Vietnam works Monday to Friday, 07:30-11:30 and 13:00-17:00 local time (UTC+7, no
daylight saving). Its load is three parts: a base that never sleeps (servers, fridges, security lights),
lights and plug loads that follow the people (ramping around arrival and departure, dimmed over the lunch
break) and air conditioning that follows the people and the heat (larger in the afternoon). Every
function here is a pure function of (simulated time, seed, unit): the same inputs give the same load on
any machine, so a scenario can be replayed and a test can compute what the meter must show.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from statistics import NormalDist

VIETNAM_TZ = timezone(timedelta(hours=7), "ICT")
"""Vietnam keeps UTC+7 all year, so a fixed offset is exact (and needs no tz database on the gateway)."""

NOMINAL_VOLTAGE_V = 220.0
NOMINAL_FREQUENCY_HZ = 50.0

Curve = tuple[tuple[float, float], ...]
"""(local hour, level) knots, linearly interpolated; the first knot at 0 h and the last at 24 h."""

LIGHTS_AND_PLUGS: Curve = (
    (0.0, 0.0), (6.75, 0.0), (7.5, 1.0), (11.5, 1.0), (11.75, 0.3), (12.75, 0.3),
    (13.0, 1.0), (17.0, 1.0), (17.5, 0.3), (18.5, 0.08), (20.0, 0.0), (24.0, 0.0),
)  # fmt: skip
"""Working-day share of lights, computers and plug loads: staff arrive, break for lunch, leave."""

COOLING: Curve = (
    (0.0, 0.0), (7.0, 0.0), (7.75, 0.6), (11.5, 0.8), (11.75, 0.5), (12.75, 0.5),
    (13.0, 0.9), (14.5, 1.0), (16.5, 1.0), (17.0, 0.9), (17.5, 0.1), (18.0, 0.0), (24.0, 0.0),
)  # fmt: skip
"""Working-day share of air conditioning: switched on at arrival, working hardest in the afternoon heat."""

GRID_VOLTAGE: Curve = (
    (0.0, 0.02), (5.0, 0.025), (9.0, 0.0), (14.0, -0.02), (17.0, -0.01),
    (19.5, -0.025), (22.0, 0.005), (24.0, 0.02),
)  # fmt: skip
"""Relative deviation of the supply voltage: high at night, sagging at the daytime and evening peaks."""

_SLOW_NOISE_PERIOD_S = 900.0
"""Slow variation (people, weather, equipment cycling) changes course every quarter of an hour."""

_POWER_FACTOR_RANGE = (0.85, 0.97)
_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True)
class UnitLoad:
    """The fixed character of one metered circuit: how big each part of its load is at full use."""

    base_w: float
    office_w: float
    cooling_w: float
    phase_shares: tuple[float, float, float]
    """How the load divides over L1, L2, L3 (sums to 1; slightly unbalanced as in real buildings)."""

    @property
    def peak_w(self) -> float:
        return self.base_w + self.office_w + self.cooling_w


@dataclass(frozen=True)
class PhaseDemand:
    active_w: float
    power_factor: float

    @property
    def reactive_var(self) -> float:
        """Q = P * tan(acos PF): inductive loads (motors, ballasts) draw positive reactive power."""
        return self.active_w * math.sqrt(1.0 - self.power_factor**2) / self.power_factor


@dataclass(frozen=True)
class Demand:
    """What one unit draws at one instant, per phase."""

    phases: tuple[PhaseDemand, PhaseDemand, PhaseDemand]

    @property
    def active_w(self) -> float:
        return sum(p.active_w for p in self.phases)

    @property
    def reactive_var(self) -> float:
        return sum(p.reactive_var for p in self.phases)


@dataclass(frozen=True)
class Grid:
    """The supply as one unit's meter sees it."""

    voltages_v: tuple[float, float, float]
    """Phase-to-neutral voltages of L1, L2, L3."""
    frequency_hz: float


def seeded_rng(*key: object) -> random.Random:
    """A generator seeded from `key`; string seeds are hashed with SHA-512, so stable across runs."""
    return random.Random("/".join(map(str, key)))


def _uniform(*key: object) -> float:
    """A number in (0, 1) fixed by `key`: a keyed hash, far cheaper than seeding a generator per sample."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def interpolate(curve: Curve, hour: float) -> float:
    """The level of `curve` at `hour` (0 <= hour < 24)."""
    i = bisect.bisect_right(curve, hour, key=lambda knot: knot[0])
    (h0, v0), (h1, v1) = curve[i - 1], curve[min(i, len(curve) - 1)]
    return v0 if h1 == h0 else v0 + (v1 - v0) * (hour - h0) / (h1 - h0)


def local_hour(t: datetime) -> float:
    local = t.astimezone(VIETNAM_TZ)
    return local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600


def is_working_day(t: datetime) -> bool:
    """Monday to Friday in Vietnam (public holidays are calendar data, not part of this model)."""
    return t.astimezone(VIETNAM_TZ).weekday() < 5


def office_levels(t: datetime) -> tuple[float, float]:
    """(lights and plugs, cooling) in 0..1 at `t`: the shape of the office day, zero on weekends."""
    if not is_working_day(t):
        return 0.0, 0.0
    hour = local_hour(t)
    return interpolate(LIGHTS_AND_PLUGS, hour), interpolate(COOLING, hour)


def slow_noise(t: datetime, *key: object) -> float:
    """Smooth noise in -1..1: random knots every quarter hour joined by a smoothstep, so no jumps."""
    position = t.timestamp() / _SLOW_NOISE_PERIOD_S
    knot = math.floor(position)
    frac = position - knot
    v0, v1 = (2.0 * _uniform("slow", *key, k) - 1.0 for k in (knot, knot + 1))
    return v0 + (v1 - v0) * frac * frac * (3 - 2 * frac)


def fast_noise(t: datetime, *key: object) -> float:
    """Independent standard-normal noise for each sample instant (millisecond resolution)."""
    return _STANDARD_NORMAL.inv_cdf(_uniform("fast", *key, round(t.timestamp() * 1000)))


@cache
def unit_load(seed: int, unit: int) -> UnitLoad:
    """The seeded character of `unit`: unit 1 is the building's main meter, the others sub-meters."""
    rng = seeded_rng("unit", seed, unit)
    peak_w = rng.uniform(40_000, 80_000) if unit == 1 else rng.uniform(6_000, 20_000)
    base = rng.uniform(0.12, 0.20)
    office = rng.uniform(0.25, 0.35)
    raw_shares = [1.0 + rng.uniform(-0.06, 0.06) for _ in range(3)]
    total = sum(raw_shares)
    shares = (raw_shares[0] / total, raw_shares[1] / total, raw_shares[2] / total)
    return UnitLoad(
        base_w=peak_w * base,
        office_w=peak_w * office,
        cooling_w=peak_w * (1.0 - base - office),
        phase_shares=shares,
    )


_COMPONENT_POWER_FACTORS = (0.955, 0.93, 0.86)
"""Base (IT with PFC supplies), lights and plugs (LED drivers, PCs), cooling (compressor motors)."""


def demand(t: datetime, seed: int, unit: int) -> Demand:
    """The per-phase active power and power factor of `unit` at simulated time `t`."""
    load = unit_load(seed, unit)
    lights, cooling = office_levels(t)
    components = (
        load.base_w * (1 + 0.05 * slow_noise(t, seed, unit, "base")),
        load.office_w * lights * (1 + 0.10 * slow_noise(t, seed, unit, "office")),
        load.cooling_w * cooling * (1 + 0.10 * slow_noise(t, seed, unit, "cooling")),
    )
    active = sum(components)
    reactive = sum(
        p * math.tan(math.acos(pf)) for p, pf in zip(components, _COMPONENT_POWER_FACTORS, strict=True)
    )
    mix_pf = active / math.hypot(active, reactive)
    low, high = _POWER_FACTOR_RANGE
    phases = tuple(
        PhaseDemand(
            active_w=active * share * (1 + 0.02 * fast_noise(t, seed, unit, "p", i)),
            power_factor=min(high, max(low, mix_pf + 0.005 * fast_noise(t, seed, unit, "pf", i))),
        )
        for i, share in enumerate(load.phase_shares)
    )
    return Demand(phases=(phases[0], phases[1], phases[2]))


def grid(t: datetime, seed: int, unit: int) -> Grid:
    """Supply voltage and frequency: shared by every unit of a seed (one building), plus per-meter noise."""
    daily = interpolate(GRID_VOLTAGE, local_hour(t))
    voltages = tuple(
        NOMINAL_VOLTAGE_V * (1 + daily + 0.01 * slow_noise(t, seed, "grid", i))
        + 0.3 * fast_noise(t, seed, unit, "v", i)
        for i in range(3)
    )
    frequency = NOMINAL_FREQUENCY_HZ + 0.03 * slow_noise(t, seed, "hz") + 0.005 * fast_noise(t, seed, "hz")
    return Grid(voltages_v=(voltages[0], voltages[1], voltages[2]), frequency_hz=frequency)
