"""Primitives every load model shares: local time, keyed noise, per-phase demand and the supply.

Every model is evaluated over an array of instants (UTC epoch milliseconds, non-decreasing): a dataset
evaluates a week of one meter in one call, a served meter the windows since its last read (often one).
Each value is a pure function of (instant, key), whatever else the array holds, so a scenario can be
replayed, `serve` and `generate` show the same numbers, and a test can compute what a meter must show.
The load models themselves (office, street lighting, advertising, machines) live in :mod:`sim.loads`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from kilowatch.timebase import DAY_MS, EPOCH, HOUR_MS, OFFSET_MS, as_date, to_ms

NOMINAL_VOLTAGE_V = 220.0
NOMINAL_FREQUENCY_HZ = 50.0

Times = npt.NDArray[np.int64]
"""Instants as UTC epoch milliseconds, non-decreasing: what every model is evaluated over."""
Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]

Curve = tuple[tuple[float, float], ...]
"""(local hour, level) knots, linearly interpolated; the first knot at 0 h and the last at 24 h."""

PhaseShares = tuple[float, float, float]
"""How a load divides over L1, L2, L3 (sums to 1)."""

Component = tuple[npt.NDArray[np.floating[Any]] | float, npt.NDArray[np.floating[Any]] | float]
"""(active W, power factor) of one part of a load, e.g. the compressors of the air conditioning; each a
constant or one value per instant."""

GRID_VOLTAGE: Curve = (
    (0.0, 0.02), (5.0, 0.025), (9.0, 0.0), (14.0, -0.02), (17.0, -0.01),
    (19.5, -0.025), (22.0, 0.005), (24.0, 0.02),
)  # fmt: skip
"""Relative deviation of the supply voltage: high at night, sagging at the daytime and evening peaks."""

SLOW_NOISE_PERIOD_S = 900.0
"""Slow variation (people, weather, equipment cycling) changes course every quarter of an hour."""

_POWER_FACTOR_RANGE = (0.05, 0.999)
_EPOCH_WEEKDAY = EPOCH.weekday()

# splitmix64 (Steele, Lea, Flood 2014): a Weyl sequence through a 64-bit finaliser, a counter-based
# generator whose value at any counter costs the same, so noise at an instant needs no history.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))


@dataclass(frozen=True)
class Demand:
    """What one circuit draws at each instant, per phase: arrays of shape (3, instants)."""

    active_w: Floats
    power_factor: Floats

    @property
    def reactive_var(self) -> Floats:
        """Q = P * tan(acos PF): inductive loads (motors, ballasts) draw positive reactive power."""
        pf = self.power_factor
        result: Floats = self.active_w * np.sqrt(1.0 - pf * pf) / pf
        return result

    @property
    def total_active_w(self) -> Floats:
        a = self.active_w
        result: Floats = a[0] + a[1] + a[2]
        return result

    def __getitem__(self, which: slice | Flags) -> Demand:
        """The instants `which` selects."""
        return Demand(self.active_w[:, which], self.power_factor[:, which])


@dataclass(frozen=True)
class Grid:
    """The supply as one meter sees it, at each instant."""

    voltages_v: Floats
    """Phase-to-neutral voltages of L1, L2, L3: shape (3, instants)."""
    frequency_hz: Floats


def instants(*ts: datetime) -> Times:
    """`ts` (timezone-aware) as the epoch milliseconds the models take."""
    return np.array([to_ms(t) for t in ts], dtype=np.int64)


def local_hour(ms: Times) -> Floats:
    result: Floats = ((ms + OFFSET_MS) % DAY_MS) / HOUR_MS
    return result


def local_weekday(ms: Times) -> npt.NDArray[np.int64]:
    """Monday 0 .. Sunday 6, in local time."""
    result: npt.NDArray[np.int64] = ((ms + OFFSET_MS) // DAY_MS + _EPOCH_WEEKDAY) % 7
    return result


def local_days(ms: Times) -> Iterator[tuple[date, slice]]:
    """Each local day the (non-decreasing) `ms` touch, with the slice of `ms` inside it: day plans (an
    office's timetable, a machine's jobs, a night's switching) are looked up once a day, not per instant."""
    if not len(ms):
        return
    first, last = (int(m + OFFSET_MS) // DAY_MS for m in (ms[0], ms[-1]))
    starts = np.searchsorted(ms, np.arange(first + 1, last + 1) * DAY_MS - OFFSET_MS).tolist()
    for i, (lo, hi) in enumerate(zip([0, *starts], [*starts, len(ms)], strict=True)):
        if hi > lo:
            yield as_date(first + i), slice(lo, hi)


def seeded_rng(*key: object) -> random.Random:
    """A generator seeded from `key`; string seeds are hashed with SHA-512, so stable across runs."""
    return random.Random("/".join(map(str, key)))


def uniform(*key: object) -> float:
    """A number in (0, 1) fixed by `key`, for one-off draws (a replacement meter's reading)."""
    return (_key_hash(key) + 0.5) / 2**64


@lru_cache(maxsize=1 << 14)
def _key_hash(key: tuple[object, ...]) -> int:
    """A 64-bit hash of `key`'s text; keys are compared by equality, so a key must not mix 1, 1.0 and
    True for the same part."""
    return int.from_bytes(hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=1 << 14)
def _seeds(key: tuple[object, ...], streams: int) -> npt.NDArray[np.uint64]:
    """The starting points of `key`'s streams, as a column to add to a row of counters."""
    hashes = [_key_hash((*key, s)) for s in range(streams)] if streams > 1 else [_key_hash(key)]
    return np.array(hashes, dtype=np.uint64)[:, None]


def _hashes(key: tuple[object, ...], counters: npt.NDArray[np.int64], streams: int) -> npt.NDArray[np.uint64]:
    """splitmix64 of `streams` independent sequences keyed by `key`, at each counter: shape (streams, n)."""
    x = counters.astype(np.uint64) * _GOLDEN + _seeds(key, streams)
    x ^= x >> _SHIFTS[0]
    x *= _MIX1
    x ^= x >> _SHIFTS[1]
    x *= _MIX2
    x ^= x >> _SHIFTS[2]
    return x


def _unit(bits: npt.NDArray[np.uint64]) -> Floats:
    """The top 53 bits as a number in (0, 1)."""
    result: Floats = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return result


def uniforms(ms: Times, *key: object) -> Floats:
    """Independent numbers in (0, 1), one per instant (millisecond resolution), fixed by `key`."""
    return _unit(_hashes(key, ms, 1)[0])


def normals(ms: Times, count: int, *key: object) -> Floats:
    """`count` independent standard-normal series keyed by `key`, one value per instant: shape (count, n).

    Box-Muller on the two halves of each hash gives two normals (cosine and sine) per hash; the angle's
    cosine and sine in single precision (ample for noise) cost a tenth of double precision's.
    """
    bits = _hashes(("fast", *key), ms, (count + 1) // 2)
    radius = np.sqrt(-2.0 * np.log(((bits >> np.uint64(32)).astype(np.float64) + 0.5) * 2.0**-32))
    angle = ((bits & np.uint64(0xFFFFFFFF)).astype(np.float64) * (2.0 * np.pi * 2.0**-32)).astype(np.float32)
    result: Floats = np.concatenate((radius * np.cos(angle), radius * np.sin(angle)))[:count]
    return result


def slow_noise(ms: Times, count: int, *key: object, period_s: float = SLOW_NOISE_PERIOD_S) -> Floats:
    """`count` independent smooth noises in -1..1 keyed by `key`: random knots every `period_s` joined by a
    smoothstep, so no jumps; shape (count, n)."""
    if not len(ms):
        return np.zeros((count, 0))
    position = ms / (period_s * 1000.0)
    knot = np.floor(position)
    frac = position - knot
    index = knot.astype(np.int64)
    first = int(index[0])
    knots = 2.0 * _unit(_hashes(("slow", *key), np.arange(first, int(index[-1]) + 2), count)) - 1.0
    index -= first
    v0, v1 = knots[:, index], knots[:, index + 1]
    result: Floats = v0 + (v1 - v0) * (frac * frac * (3.0 - 2.0 * frac))
    return result


def interpolate(curve: Curve, hour: Floats) -> Floats:
    """The level of `curve` at each `hour` (0 <= hour < 24)."""
    result: Floats = np.interp(hour, [h for h, _ in curve], [v for _, v in curve])
    return result


def phase_shares(*key: object, spread: float = 0.06) -> PhaseShares:
    """A slightly unbalanced three-phase split, as single-phase loads never divide evenly in real buildings."""
    rng = seeded_rng("phases", *key)
    raw = [1.0 + rng.uniform(-spread, spread) for _ in range(3)]
    total = sum(raw)
    return raw[0] / total, raw[1] / total, raw[2] / total


def split(ms: Times, components: Sequence[Component], shares: PhaseShares, *key: object) -> Demand:
    """The per-phase demand of `components` mixed together, with a little noise on each phase.

    The mix's power factor is that of the summed active and reactive power, so a motor idling beside a
    large resistive load barely lowers it, while a motor idling alone shows its poor power factor.
    """
    active = np.zeros(len(ms))
    reactive = np.zeros(len(ms))
    for watts, pf in components:
        w, f = np.asarray(watts, dtype=np.float64), np.asarray(pf, dtype=np.float64)
        active += w
        reactive += w * (np.sqrt(1.0 - f * f) / f)
    mix_pf = active / np.sqrt(active * active + reactive * reactive)
    noise = normals(ms, 6, *key)
    low, high = _POWER_FACTOR_RANGE
    return Demand(
        active_w=active * np.array(shares)[:, None] * (1.0 + 0.02 * noise[:3]),
        power_factor=np.clip(mix_pf + 0.005 * noise[3:], low, high),
    )


def combine(demands: Sequence[Demand], gain: float = 1.0) -> Demand:
    """Several circuits behind one meter: active and reactive power add per phase (times `gain`, e.g.
    1.02 for the cable losses between a main meter and its sub-meters)."""
    active = gain * sum((d.active_w for d in demands[1:]), demands[0].active_w)
    reactive = gain * sum((d.reactive_var for d in demands[1:]), demands[0].reactive_var)
    return Demand(active, active / np.sqrt(active * active + reactive * reactive))


def grid(ms: Times, supply: object, meter: object) -> Grid:
    """Supply voltage and frequency: shared by every meter of one `supply` (a site), plus per-meter noise."""
    daily = interpolate(GRID_VOLTAGE, local_hour(ms))
    swings = slow_noise(ms, 3, supply, "grid")
    voltages = NOMINAL_VOLTAGE_V * (1.0 + daily + 0.01 * swings) + 0.3 * normals(ms, 3, supply, meter, "v")
    frequency = (
        NOMINAL_FREQUENCY_HZ
        + 0.03 * slow_noise(ms, 1, supply, "hz")[0]
        + 0.005 * normals(ms, 1, supply, "hz")[0]
    )
    return Grid(voltages_v=voltages, frequency_hz=frequency)
