"""A scenario served live: one Modbus line per bus, every unit showing its meter's load, anomalies and
faults as the dataset generator would label them.

Faults act only inside their labelled windows. Wire faults map onto the server's (silent -> dead, slow,
crc, exception); a crc fault on a Modbus TCP bus, which has no CRC, becomes what a TCP gateway answers for
a garbled line behind it (exception 0x0B). Value faults (frozen, counter reset, meter replacement) change
what the meter shows. A gateway's clock jump is the agent's clock, not the meter's, so serving ignores it.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from kilowatch.profiles import load_builtin
from kilowatch.timebase import VIETNAM_TZ
from sim.anomalies import CRC_FAILURE_SHARE, AnomalyKind
from sim.deployment import VALUE_FAULTS, FaultyMeter, Placed, build_loads, place, simulated_meter
from sim.faults import Fault, FaultKind, Scheduled
from sim.register_image import ExceptionCode
from sim.scenario import ExpandedMeter, Scenario
from sim.server import SimServerError, Unit

PTY_WAIT_S = 10.0


@dataclass(frozen=True)
class Bus:
    """One bus of the scenario, ready to serve: its place in the deployment and its units."""

    site: str
    gateway: str
    bus: str
    transport: Literal["tcp", "rtu"]
    units: dict[int, Unit]

    @property
    def name(self) -> str:
        return f"{self.site}/{self.gateway}/{self.bus}"


def wire_fault(placed: Placed, transport: Literal["tcp", "rtu"]) -> Fault | None:
    """How a placed fault shows on the wire; None for faults that are not about answering."""
    kind = placed.kind
    if kind is AnomalyKind.SILENT:
        return Fault(kind=FaultKind.DEAD)
    if kind is AnomalyKind.SLOW:
        return Fault(kind=FaultKind.SLOW, seconds=placed.spec.seconds)
    if kind is AnomalyKind.EXCEPTION:
        return Fault(kind=FaultKind.EXCEPTION, code=placed.spec.code)
    if kind is AnomalyKind.CRC:
        if transport == "rtu":
            return Fault(kind=FaultKind.CRC, share=CRC_FAILURE_SHARE)
        return Fault(kind=FaultKind.EXCEPTION, code=ExceptionCode.GATEWAY_TARGET_FAILED_TO_RESPOND)
    return None


def scenario_buses(scenario: Scenario, start: datetime, days: int, update_interval: float) -> list[Bus]:
    """Every bus of `scenario` served from simulated `start`, anomalies placed over `days` from its local
    day (as ``generate --start <that day> --days <days>`` places and labels them)."""
    placed = place(scenario, start.astimezone(VIETNAM_TZ).date(), days)
    loads = build_loads(scenario, placed)
    by_target: dict[str, list[Placed]] = defaultdict(list)
    for p in placed:
        by_target[p.target].append(p)
    grouped: dict[tuple[str, str, str], list[ExpandedMeter]] = defaultdict(list)
    for meter in scenario.meters:
        grouped[(meter.site_id, meter.gateway, meter.bus)].append(meter)
    buses = []
    for (site, gateway, bus), meters in grouped.items():
        transport = meters[0].transport
        units = {}
        for meter in meters:
            faults = by_target[meter.id]
            state = simulated_meter(scenario, meter, loads[meter.id], start, update_interval)
            wire = [(p, wire_fault(p, transport)) for p in faults]
            units[meter.spec.unit] = Unit(
                load_builtin(meter.spec.profile),
                FaultyMeter(state, [p for p in faults if p.kind in VALUE_FAULTS]),
                tuple(Scheduled(fault, p.start, p.end) for p, fault in wire if fault is not None),
            )
        buses.append(Bus(site, gateway, bus, transport, units))
    return buses


@asynccontextmanager
async def pty_pair(master: Path) -> AsyncIterator[Path]:
    """A pseudo-terminal pair joined by socat, as a serial cable: yields the end to serve on (next to
    `master`, hidden), while a Modbus master opens `master`. socat stops when the context exits."""
    socat = shutil.which("socat")
    if socat is None:
        raise SimServerError(str(master), "socat is not installed (apt-get install socat)")
    own = master.with_name(f".{master.name}.sim")
    master.parent.mkdir(parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        socat, f"pty,raw,echo=0,link={own}", f"pty,raw,echo=0,link={master}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PTY_WAIT_S
        while not _linked(own, master):
            if process.returncode is not None:
                said = (await process.stderr.read()).decode().strip() if process.stderr else ""
                raise SimServerError(str(master), f"socat exited: {said}")
            if loop.time() > deadline:
                raise SimServerError(str(master), "socat made no pseudo-terminals in time")
            await asyncio.sleep(0.05)
        yield own
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def _linked(*links: Path) -> bool:
    """Whether socat has made all its pseudo-terminal links (a stat each: too quick to leave the loop for)."""
    return all(link.exists() for link in links)
