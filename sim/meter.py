"""One simulated three-phase meter: the whole quantity vocabulary, electrically consistent, with counters.

A real meter measures once per cycle and refreshes its registers on its own schedule; this one refreshes
once per ``update_interval`` of simulated time, so two masters reading in the same window (the agent and
`mbpoll`) see identical numbers. Instantaneous values come from the load model; the energy counters
integrate the power the meter showed over simulated time, so they only ever move forward.

A served meter and a generated dataset go through the same code: a read evaluates the windows since the
previous read in one array, a dataset a week of windows at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sim.load_model import Demand, Floats, Grid, Times, grid, instants, seeded_rng
from sim.loads import Load
from sim.scenario import Resolution

_PHASE_ANGLES = np.exp(1j * np.radians([0.0, -120.0, 120.0]))[:, None]
"""Unit phasors of L1, L2, L3 in a positive-sequence network."""

_PHASES = ("l1", "l2", "l3")
_LINE_PAIRS = (("l1_l2", 0, 1), ("l2_l3", 1, 2), ("l3_l1", 2, 0))

MAX_INTEGRATION_STEPS = 600
"""Windows one catch-up evaluates at most, so a read after a long pause at high speed never stalls the
server's event loop; beyond it the counters integrate in coarser steps (monotonic, a bit less exact)."""

COUNTERS = (
    "energy_import_kwh",
    "energy_export_kwh",
    "reactive_energy_import_kvarh",
    "reactive_energy_export_kvarh",
)
"""The energy counters: they only grow, by a window's energy at a time, and need float64."""

Values = dict[str, Floats]
"""One array per quantity, an element per window shown."""


class MeterState(Protocol):
    """What a server asks of a meter: the register values it shows at a simulated time."""

    def read(self, at: datetime) -> Mapping[str, float]: ...


def electrical_values(load: Demand, supply: Grid, *, phasors: bool = True) -> Values:
    """Every instantaneous quantity of the vocabulary, derived so that the physics holds exactly.

    Per phase I = P / (V * PF), Q = P * tan(acos PF), S = sqrt(P^2 + Q^2); line voltages and the neutral
    current are phasor sums of a balanced 120-degree system, each current lagging its voltage by acos PF.
    Those two need complex arithmetic, a third of the cost: without `phasors` they are left out.
    """
    active, pf, volts = load.active_w, load.power_factor, supply.voltages_v
    reactive = load.reactive_var
    amps = active / (volts * pf)
    values: Values = {}
    for i, name in enumerate(_PHASES):
        values[f"voltage_{name}_v"] = volts[i]
        values[f"current_{name}_a"] = amps[i]
        values[f"active_power_{name}_w"] = active[i]
        values[f"reactive_power_{name}_var"] = reactive[i]
        values[f"apparent_power_{name}_va"] = np.sqrt(active[i] * active[i] + reactive[i] * reactive[i])
        values[f"power_factor_{name}"] = pf[i]
    if phasors:
        voltage_phasors = volts * _PHASE_ANGLES
        current_phasors = amps * _PHASE_ANGLES * (pf - 1j * np.sqrt(1.0 - pf * pf))
        for name, a, b in _LINE_PAIRS:
            values[f"voltage_{name}_v"] = np.abs(voltage_phasors[a] - voltage_phasors[b])
        values["current_n_a"] = np.abs(current_phasors[0] + current_phasors[1] + current_phasors[2])
    total_active = active[0] + active[1] + active[2]
    total_reactive = reactive[0] + reactive[1] + reactive[2]
    apparent = np.sqrt(total_active * total_active + total_reactive * total_reactive)
    values["active_power_w"] = total_active
    values["reactive_power_var"] = total_reactive
    values["apparent_power_va"] = apparent
    values["power_factor"] = total_active / apparent
    values["frequency_hz"] = supply.frequency_hz
    return values


class SimulatedMeter:
    """The register state of one meter: a snapshot per update window plus energy counters.

    Args:
        load: What the metered circuit draws (see :mod:`sim.loads`).
        key: The meter's identity (with the seed): seeds its counters and its voltage noise.
        supply: The supply it hangs on (a site): meters of one supply see the same voltage swings.
        epoch: Simulated time at which the first update window starts (usually the clock's start).
        update_interval: Simulated seconds between register refreshes.
        resolution: The steps its registers show (power rounded, counters truncated as a register
            holding whole steps does); None: the model's own precision.
    """

    def __init__(
        self,
        load: Load,
        *,
        key: str,
        supply: str,
        epoch: datetime,
        update_interval: float = 1.0,
        resolution: Resolution | None = None,
    ) -> None:
        if not update_interval > 0:
            raise ValueError(f"update_interval must be positive, got {update_interval}")
        self.load = load
        self.key = key
        self.supply = supply
        self.epoch = epoch
        self.update_interval = update_interval
        self.resolution = resolution
        self._epoch_ms = int(instants(epoch)[0])
        rng = seeded_rng("counters", key)
        import_kwh = load.rated_w / 1000 * rng.uniform(1_500, 6_000)  # a few years of service
        self._counters = {
            "energy_import_kwh": import_kwh,
            "reactive_energy_import_kvarh": import_kwh * rng.uniform(0.3, 0.45),
            "energy_export_kwh": rng.uniform(0.0, 1.5),  # left from commissioning; the building never exports
            "reactive_energy_export_kvarh": rng.uniform(0.0, 3.0),
        }
        self._tick = 0
        """The window shown last (or first to show): the counters hold the energy up to its start."""
        self._snapshot: dict[str, float] | None = None

    def tick(self, at: datetime) -> int:
        """The update window `at` falls in."""
        return math.floor((at - self.epoch).total_seconds() / self.update_interval)

    def window_ms(self, ticks: npt.NDArray[np.int64]) -> Times:
        """When windows `ticks` start, in the models' epoch milliseconds."""
        result: Times = self._epoch_ms + np.floor(ticks * (self.update_interval * 1000)).astype(np.int64)
        return result

    def read(self, at: datetime) -> Mapping[str, float]:
        """The register values shown at simulated time `at` (the same for the whole update window).

        Times before the current window (which a monotonic clock never produces) show the current window,
        so counters never run backwards.
        """
        tick = self.tick(at)
        if self._snapshot is None or tick > self._tick:
            stride = max(1, math.ceil((tick - self._tick) / MAX_INTEGRATION_STEPS))
            self._windows(
                np.append(np.arange(self._tick, max(tick, self._tick), stride), max(tick, self._tick))
            )
        assert self._snapshot is not None
        return self._snapshot

    def upcoming(self, stop: int, *, phasors: bool = True) -> Values:
        """What reads at the start of each window not shown yet, up to window `stop` (excluded), show: a
        dataset's poll cycles at the update interval, a week in one call (`phasors`: see
        :func:`electrical_values`)."""
        shown = self._snapshot is not None
        values = self._windows(np.arange(self._tick, max(stop, self._tick + 1)), phasors)
        return {name: column[1:] for name, column in values.items()} if shown else values

    def reset_counters(self, import_kwh: float) -> None:
        """Set the energy counters as a meter reset (to zero) or a replacement meter (to its own reading)
        leaves them; the snapshot shows it from the next window on."""
        self._counters = {
            "energy_import_kwh": import_kwh,
            "reactive_energy_import_kvarh": import_kwh * 0.35,
            "energy_export_kwh": 0.0,
            "reactive_energy_export_kvarh": 0.0,
        }

    def _windows(self, ticks: npt.NDArray[np.int64], phasors: bool = True) -> Values:
        """Every quantity at the start of windows `ticks` (increasing, the first the current one), each
        window's power held until the next tick for the counters; the last becomes the one shown."""
        ms = self.window_ms(ticks)
        demand = self.load.demand(ms)
        values = electrical_values(demand, grid(ms, self.supply, self.key), phasors=phasors)
        kwh_per_w = np.diff(ticks) * self.update_interval / 3600 / 1000
        integrated = {
            "energy_import_kwh": values["active_power_w"],
            "reactive_energy_import_kvarh": values["reactive_power_var"],
        }
        for name, start in self._counters.items():
            if name in integrated:
                values[name] = np.cumsum(np.concatenate(([start], integrated[name][:-1] * kwh_per_w)))
            else:
                values[name] = np.full(len(ticks), start)
        self._counters = {name: float(values[name][-1]) for name in self._counters}
        if self.resolution is not None:
            values = _shown(values, self.resolution)
        self._tick = int(ticks[-1])
        self._snapshot = {name: float(column[-1]) for name, column in values.items()}
        return values


_POWERS = ("active_power", "reactive_power", "apparent_power")


def _shown(values: Values, resolution: Resolution) -> Values:
    """`values` as registers of `resolution` show them: powers rounded to their step, counters cut down to
    theirs (a counter shows the whole steps it has counted), the rest as they are."""
    shown = dict(values)
    for name, column in values.items():
        if name in COUNTERS:
            shown[name] = np.floor(column / resolution.energy_kwh + 1e-9) * resolution.energy_kwh
        elif name.startswith(_POWERS):
            shown[name] = np.round(column / resolution.power_w) * resolution.power_w
    return shown
