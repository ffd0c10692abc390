"""Simulated meters on Modbus TCP, as a gateway with several units behind one address would serve them.

pymodbus only frames the protocol here. Each unit is a pymodbus ``SimDevice`` (the datastore API that
replaces the deprecated ``ModbusServerContext``) whose registers span the whole address space, so pymodbus
never refuses a request by itself; its ``action`` hook, called on every access, asks the profile's
:class:`~sim.register_image.RegisterImage` for the answer and fills in the meter's current words. The
price is one 64 k-register buffer per unit (about 1 MB), which is fine for the tens of units a test or a
demo runs. A unit id that is not served gets exception 0x0B (gateway target failed to respond) from a
catch-all device, as a Modbus TCP-to-RTU gateway answers for a meter that is not on its bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Self, cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from kilowatch.profiles import Profile
from sim.clock import SimClock
from sim.meter import SimulatedMeter
from sim.register_image import MAX_UNIT, ExceptionCode, RegisterImage


class SimServerError(RuntimeError):
    """The simulator could not start serving (typically: the address is in use)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot serve Modbus TCP on {host}:{port}: {reason}")
        self.host = host
        self.port = port


class SimServer:
    """Serves `units` meters of one `profile` over Modbus TCP; use as ``async with SimServer(...)``.

    Args:
        profile: The register map every unit serves.
        units: Modbus unit ids (1-247); unit 1 is the main meter, the others smaller sub-meters.
        host: Address to listen on.
        port: TCP port; 0 picks a free one (read :attr:`port` after start).
        seed: Scenario seed: the same seed replays the same loads and counters.
        speed: Simulated seconds per real second.
        update_interval: Simulated seconds between register refreshes of each meter.
        start: Simulated time when serving begins (timezone-aware); None means now.
    """

    def __init__(
        self,
        *,
        profile: Profile,
        units: Sequence[int],
        host: str = "127.0.0.1",
        port: int = 5020,
        seed: int = 1,
        speed: float = 1.0,
        update_interval: float = 1.0,
        start: datetime | None = None,
    ) -> None:
        if not units:
            raise ValueError("serve at least one unit")
        bad = [u for u in units if not 1 <= u <= MAX_UNIT]
        if bad:
            raise ValueError(f"unit ids must be 1-{MAX_UNIT}, got {bad}")
        if len(set(units)) != len(units):
            raise ValueError(f"unit ids must be unique, got {list(units)}")
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port must be 0-65535, got {port}")
        self.profile = profile
        self.units = sorted(units)
        self.host = host
        self.port = port
        self.clock = SimClock(start, speed)
        self.image = RegisterImage(profile)
        self.meters = {
            unit: SimulatedMeter(
                unit=unit, seed=seed, epoch=self.clock.start, update_interval=update_interval
            )
            for unit in self.units
        }
        self._server: ModbusTcpServer | None = None

    def values(self, unit: int) -> Mapping[str, float]:
        """What `unit` shows right now, by quantity name (the numbers behind its registers)."""
        return self.meters[unit].read(self.clock.now())

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the simulator is already serving")

        devices = [_device(unit, partial(self._answer, unit)) for unit in self.units]
        devices.append(_device(0, self._absent))  # id 0 stands for every unit id not listed
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise SimServerError(self.host, self.port, "the address is in use or not available here") from exc
        self._server = server
        listener = cast(asyncio.Server, server.transport)  # a listening pymodbus protocol holds the Server
        self.port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and drop every client connection."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _answer(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus' action hook: refuse with an exception code, or write the answer into `registers`."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        words = self.image.read(function_code, address, count, self.meters[unit].read(self.clock.now()))
        if isinstance(words, ExceptionCode):
            return ExcCodes(words)
        offset = address - start_address
        registers[offset : offset + count] = words
        return None

    async def _absent(self, *_request: object) -> ExcCodes:
        return ExcCodes(ExceptionCode.GATEWAY_TARGET_FAILED_TO_RESPOND)


def _device(unit: int, action: SimAction) -> SimDevice:
    """A pymodbus device whose every address is valid, so only `action` decides what is refused."""
    whole_space = SimData(0, count=0x10000, datatype=DataType.REGISTERS)
    return SimDevice(id=unit, simdata=[whole_space], action=action)
