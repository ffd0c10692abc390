"""Primitives every load model shares: local time, keyed noise, per-phase demand and the supply.

Every function here is a pure function of (simulated time, key): the same inputs give the same numbers on
any machine, so a scenario can be replayed and a test can compute what the meter must show. The load
models themselves (office, street lighting, advertising, machines) live in :mod:`sim.loads`.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from statistics import NormalDist

VIETNAM_TZ = timezone(timedelta(hours=7), "ICT")
"""Vietnam keeps UTC+7 all year, so a fixed offset is exact (and needs no tz database on the gateway)."""

NOMINAL_VOLTAGE_V = 220.0
NOMINAL_FREQUENCY_HZ = 50.0

Curve = tuple[tuple[float, float], ...]
"""(local hour, level) knots, linearly interpolated; the first knot at 0 h and the last at 24 h."""

PhaseShares = tuple[float, float, float]
"""How a load divides over L1, L2, L3 (sums to 1)."""

Component = tuple[float, float]
"""(active W, power factor) of one part of a load, e.g. the compressors of the air conditioning."""

GRID_VOLTAGE: Curve = (
    (0.0, 0.02), (5.0, 0.025), (9.0, 0.0), (14.0, -0.02), (17.0, -0.01),
    (19.5, -0.025), (22.0, 0.005), (24.0, 0.02),
)  # fmt: skip
"""Relative deviation of the supply voltage: high at night, sagging at the daytime and evening peaks."""

SLOW_NOISE_PERIOD_S = 900.0
"""Slow variation (people, weather, equipment cycling) changes course every quarter of an hour."""

_POWER_FACTOR_RANGE = (0.05, 0.999)
_STANDARD_NORMAL = NormalDist()


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
    """What one circuit draws at one instant, per phase."""

    phases: tuple[PhaseDemand, PhaseDemand, PhaseDemand]

    @property
    def active_w(self) -> float:
        return sum(p.active_w for p in self.phases)

    @property
    def reactive_var(self) -> float:
        return sum(p.reactive_var for p in self.phases)


@dataclass(frozen=True)
class Grid:
    """The supply as one meter sees it."""

    voltages_v: tuple[float, float, float]
    """Phase-to-neutral voltages of L1, L2, L3."""
    frequency_hz: float


def seeded_rng(*key: object) -> random.Random:
    """A generator seeded from `key`; string seeds are hashed with SHA-512, so stable across runs."""
    return random.Random("/".join(map(str, key)))


def uniform(*key: object) -> float:
    """A number in (0, 1) fixed by `key`: a keyed hash, far cheaper than seeding a generator per sample."""
    return _hashed("/".join(map(str, key)).encode())


def _hashed(text: bytes) -> float:
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def interpolate(curve: Curve, hour: float) -> float:
    """The level of `curve` at `hour` (0 <= hour < 24)."""
    i = bisect.bisect_right(curve, hour, key=lambda knot: knot[0])
    (h0, v0), (h1, v1) = curve[i - 1], curve[min(i, len(curve) - 1)]
    return v0 if h1 == h0 else v0 + (v1 - v0) * (hour - h0) / (h1 - h0)


def local_time(t: datetime) -> datetime:
    return t.astimezone(VIETNAM_TZ)


def local_hour(t: datetime) -> float:
    local = t.astimezone(VIETNAM_TZ)
    return local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600


_last_stamp: tuple[datetime | None, float] = (None, 0.0)


def _timestamp(t: datetime) -> float:
    """`t.timestamp()`, remembered for the last instant: one reading asks it of the same `t` a dozen
    times (every noise term of every phase), and it is among the costliest calls of dataset generation."""
    global _last_stamp
    last, stamp = _last_stamp
    if t is not last:
        stamp = t.timestamp()
        _last_stamp = (t, stamp)
    return stamp


@lru_cache(maxsize=1 << 16)
def _knot(key: tuple[object, ...], knot: int) -> float:
    """A slow-noise knot in -1..1; cached, since consecutive samples (15 a knot at one-minute polls) share
    them. Keys are compared by equality, so a key must not mix 1, 1.0 and True for the same part."""
    return 2.0 * uniform("slow", *key, knot) - 1.0


def slow_noise(t: datetime, *key: object, period_s: float = SLOW_NOISE_PERIOD_S) -> float:
    """Smooth noise in -1..1: random knots every `period_s` joined by a smoothstep, so no jumps."""
    position = _timestamp(t) / period_s
    knot = math.floor(position)
    frac = position - knot
    v0, v1 = _knot(key, knot), _knot(key, knot + 1)
    return v0 + (v1 - v0) * frac * frac * (3 - 2 * frac)


@lru_cache(maxsize=1 << 14)
def _fast_prefix(key: tuple[object, ...]) -> bytes:
    """What :func:`uniform` hashes for ``("fast", *key, ms)`` up to the millisecond, built once per key."""
    return "/".join(map(str, ("fast", *key, ""))).encode()


def fast_noise(t: datetime, *key: object) -> float:
    """Independent standard-normal noise for each sample instant (millisecond resolution); the same
    number as ``uniform("fast", *key, ms)`` would give, without rebuilding the key's text every sample."""
    return _STANDARD_NORMAL.inv_cdf(_hashed(_fast_prefix(key) + str(round(_timestamp(t) * 1000)).encode()))


def phase_shares(*key: object, spread: float = 0.06) -> PhaseShares:
    """A slightly unbalanced three-phase split, as single-phase loads never divide evenly in real buildings."""
    rng = seeded_rng("phases", *key)
    raw = [1.0 + rng.uniform(-spread, spread) for _ in range(3)]
    total = sum(raw)
    return raw[0] / total, raw[1] / total, raw[2] / total


def split(t: datetime, components: Iterable[Component], shares: PhaseShares, *key: object) -> Demand:
    """The per-phase demand of `components` mixed together, with a little noise on each phase.

    The mix's power factor is that of the summed active and reactive power, so a motor idling beside a
    large resistive load barely lowers it, while a motor idling alone shows its poor power factor.
    """
    active = reactive = 0.0
    for watts, pf in components:
        active += watts
        reactive += watts * math.tan(math.acos(pf))
    mix_pf = active / math.hypot(active, reactive)
    low, high = _POWER_FACTOR_RANGE
    phases = tuple(
        PhaseDemand(
            active_w=active * share * (1 + 0.02 * fast_noise(t, *key, "p", i)),
            power_factor=min(high, max(low, mix_pf + 0.005 * fast_noise(t, *key, "pf", i))),
        )
        for i, share in enumerate(shares)
    )
    return Demand(phases=(phases[0], phases[1], phases[2]))


def combine(demands: Sequence[Demand], gain: float = 1.0) -> Demand:
    """Several circuits behind one meter: active and reactive power add per phase (times `gain`, e.g.
    1.02 for the cable losses between a main meter and its sub-meters)."""
    phases = []
    for i in range(3):
        active = gain * sum(d.phases[i].active_w for d in demands)
        reactive = gain * sum(d.phases[i].reactive_var for d in demands)
        phases.append(PhaseDemand(active, active / math.hypot(active, reactive)))
    return Demand(phases=(phases[0], phases[1], phases[2]))


def grid(t: datetime, supply: object, meter: object) -> Grid:
    """Supply voltage and frequency: shared by every meter of one `supply` (a site), plus per-meter noise."""
    daily = interpolate(GRID_VOLTAGE, local_hour(t))
    voltages = tuple(
        NOMINAL_VOLTAGE_V * (1 + daily + 0.01 * slow_noise(t, supply, "grid", i))
        + 0.3 * fast_noise(t, supply, meter, "v", i)
        for i in range(3)
    )
    frequency = (
        NOMINAL_FREQUENCY_HZ + 0.03 * slow_noise(t, supply, "hz") + 0.005 * fast_noise(t, supply, "hz")
    )
    return Grid(voltages_v=(voltages[0], voltages[1], voltages[2]), frequency_hz=frequency)
