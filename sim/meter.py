"""One simulated three-phase meter: the whole quantity vocabulary, electrically consistent, with counters.

A real meter measures once per cycle and refreshes its registers on its own schedule; this one refreshes
once per ``update_interval`` of simulated time, so two masters reading in the same window (the agent and
`mbpoll`) see identical numbers. Instantaneous values come from the load model; the energy counters
integrate the power the meter showed over simulated time, so they only ever move forward.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from sim.load_model import Demand, Grid, grid, seeded_rng
from sim.loads import Load

_PHASE_ANGLES = tuple(cmath.rect(1.0, math.radians(a)) for a in (0.0, -120.0, 120.0))
"""Unit phasors of L1, L2, L3 in a positive-sequence network."""

_PHASES = ("l1", "l2", "l3")
_LINE_PAIRS = (("l1_l2", 0, 1), ("l2_l3", 1, 2), ("l3_l1", 2, 0))

MAX_INTEGRATION_STEPS = 600
"""Load-model evaluations per catch-up at most (some 25 ms), so a read after a long pause at high speed
never stalls the server's event loop; beyond it the counters integrate in coarser steps (monotonic, a bit
less exact)."""


class MeterState(Protocol):
    """What a server asks of a meter: the register values it shows at a simulated time."""

    def read(self, at: datetime) -> Mapping[str, float]: ...


def electrical_values(load: Demand, supply: Grid) -> dict[str, float]:
    """Every instantaneous quantity of the vocabulary, derived so that the physics holds exactly.

    Per phase I = P / (V * PF), Q = P * tan(acos PF), S = sqrt(P^2 + Q^2); line voltages and the neutral
    current are phasor sums of a balanced 120-degree system, each current lagging its voltage by acos PF.
    """
    values: dict[str, float] = {}
    voltage_phasors: list[complex] = []
    current_phasors: list[complex] = []
    for name, rotation, phase, volts in zip(
        _PHASES, _PHASE_ANGLES, load.phases, supply.voltages_v, strict=True
    ):
        amps = phase.active_w / (volts * phase.power_factor)
        values[f"voltage_{name}_v"] = volts
        values[f"current_{name}_a"] = amps
        values[f"active_power_{name}_w"] = phase.active_w
        values[f"reactive_power_{name}_var"] = phase.reactive_var
        values[f"apparent_power_{name}_va"] = math.hypot(phase.active_w, phase.reactive_var)
        values[f"power_factor_{name}"] = phase.power_factor
        voltage_phasors.append(volts * rotation)
        current_phasors.append(amps * rotation * cmath.rect(1.0, -math.acos(phase.power_factor)))
    for name, a, b in _LINE_PAIRS:
        values[f"voltage_{name}_v"] = abs(voltage_phasors[a] - voltage_phasors[b])
    active, reactive = load.active_w, load.reactive_var
    apparent = math.hypot(active, reactive)
    values["current_n_a"] = abs(sum(current_phasors))
    values["active_power_w"] = active
    values["reactive_power_var"] = reactive
    values["apparent_power_va"] = apparent
    values["power_factor"] = active / apparent
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
    """

    def __init__(
        self, load: Load, *, key: str, supply: str, epoch: datetime, update_interval: float = 1.0
    ) -> None:
        if not update_interval > 0:
            raise ValueError(f"update_interval must be positive, got {update_interval}")
        self.load = load
        self.key = key
        self.supply = supply
        self.epoch = epoch
        self.update_interval = update_interval
        rng = seeded_rng("counters", key)
        self._import_kwh = load.rated_w / 1000 * rng.uniform(1_500, 6_000)  # a few years of service
        self._reactive_import_kvarh = self._import_kwh * rng.uniform(0.3, 0.45)
        self._export_kwh = rng.uniform(0.0, 1.5)  # left from commissioning; the building never exports
        self._reactive_export_kvarh = rng.uniform(0.0, 3.0)
        self._tick = 0
        self._snapshot: dict[str, float] | None = None
        self._last: tuple[int, Demand] | None = None

    def _window_start(self, tick: int) -> datetime:
        return self.epoch + timedelta(seconds=tick * self.update_interval)

    def _demand(self, tick: int) -> Demand:
        """The load at the start of window `tick`; the last one is kept, since a read integrates the
        window it showed before and then shows the next one."""
        if self._last is None or self._last[0] != tick:
            self._last = (tick, self.load.demand(self._window_start(tick)))
        return self._last[1]

    def read(self, at: datetime) -> Mapping[str, float]:
        """The register values shown at simulated time `at` (the same for the whole update window).

        Times before the current window (which a monotonic clock never produces) show the current window,
        so counters never run backwards.
        """
        tick = math.floor((at - self.epoch).total_seconds() / self.update_interval)
        if self._snapshot is None or tick > self._tick:
            self._integrate_until(max(tick, self._tick))
            self._snapshot = self._values_at(self._tick)
        return self._snapshot

    def reset_counters(self, import_kwh: float) -> None:
        """Set the energy counters as a meter reset (to zero) or a replacement meter (to its own reading)
        leaves them; the snapshot shows it from the next window on."""
        self._import_kwh = import_kwh
        self._reactive_import_kvarh = import_kwh * 0.35
        self._export_kwh = self._reactive_export_kvarh = 0.0

    def _integrate_until(self, tick: int) -> None:
        """Add the energy of windows [current, tick): each window's power held for its whole length."""
        stride = max(1, math.ceil((tick - self._tick) / MAX_INTEGRATION_STEPS))
        while self._tick < tick:
            step = min(stride, tick - self._tick)
            load = self._demand(self._tick)
            hours = step * self.update_interval / 3600
            self._import_kwh += load.active_w * hours / 1000
            self._reactive_import_kvarh += load.reactive_var * hours / 1000
            self._tick += step

    def _values_at(self, tick: int) -> dict[str, float]:
        at = self._window_start(tick)
        values = electrical_values(self._demand(tick), grid(at, self.supply, self.key))
        values["energy_import_kwh"] = self._import_kwh
        values["energy_export_kwh"] = self._export_kwh
        values["reactive_energy_import_kvarh"] = self._reactive_import_kvarh
        values["reactive_energy_export_kvarh"] = self._reactive_export_kvarh
        return values
