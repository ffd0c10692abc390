"""Reading registers off a bus: a one-method interface, its Modbus TCP implementation and a test double.

Everything above this module (poller, runner, CLI) depends only on :class:`RegisterReader`, so unit
tests feed canned register maps and the serial transports plug in later without touching the poller.
This is the one place where pymodbus exceptions become :mod:`agent.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from agent.errors import BusUnavailable, MalformedResponse, ModbusExceptionResponse, ModbusTimeout
from kilowatch.profiles import Table

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusTcpClient

ILLEGAL_DATA_ADDRESS = 2


class RegisterReader(Protocol):
    """Reads `count` consecutive 16-bit registers of one unit; raises :class:`agent.errors.AgentError`."""

    async def read(self, table: Table, address: int, count: int, unit: int) -> list[int]: ...


class ModbusTcpReader:
    """A Modbus TCP connection to one bus, opened by the first read and reopened by the next read after a
    failure, so a meter that is down at start-up or drops its connection costs one cycle, not the agent.

    pymodbus' own reconnection and retries are switched off: the agent's poll cycle is the retry, and a
    dead meter must cost one timeout per cycle, not several.
    """

    def __init__(self, *, bus: str, host: str, port: int = 502, timeout_s: float = 1.0) -> None:
        self.bus = bus
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._client: AsyncModbusTcpClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _connected(self) -> AsyncModbusTcpClient:
        from pymodbus.client import AsyncModbusTcpClient

        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        if not await client.connect():
            client.close()
            raise BusUnavailable(self.bus, f"cannot connect to {self.host}:{self.port}")
        self._client = client
        return client

    async def read(self, table: Table, address: int, count: int, unit: int) -> list[int]:
        from pymodbus.exceptions import ModbusException, ModbusIOException

        client = await self._connected()
        call = client.read_input_registers if table is Table.INPUT else client.read_holding_registers
        try:
            response = await call(address, count=count, device_id=unit)
        except ModbusIOException as exc:
            self.close()
            raise ModbusTimeout(self.bus, unit, address) from exc
        except (ModbusException, OSError) as exc:  # ConnectionException and the rest: the link is gone
            self.close()
            raise BusUnavailable(self.bus, f"{self.host}:{self.port}: {exc}") from exc
        if response.isError():
            raise ModbusExceptionResponse(self.bus, unit, address, int(response.exception_code))
        registers = list(response.registers)
        if len(registers) != count:
            raise MalformedResponse(
                self.bus, unit, address, f"asked for {count} registers, got {len(registers)}"
            )
        return registers


class MemoryReader:
    """Meters in memory, by unit: a missing unit never answers, a missing register gets exception 2."""

    def __init__(self, units: Mapping[int, Mapping[tuple[Table, int], int]], *, bus: str = "memory") -> None:
        self.units = {unit: dict(words) for unit, words in units.items()}
        self.bus = bus
        self.requests: list[tuple[Table, int, int, int]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def read(self, table: Table, address: int, count: int, unit: int) -> list[int]:
        self.requests.append((table, address, count, unit))
        if unit not in self.units:
            raise ModbusTimeout(self.bus, unit, address)
        words = self.units[unit]
        try:
            return [words[(table, a)] for a in range(address, address + count)]
        except KeyError:
            raise ModbusExceptionResponse(self.bus, unit, address, ILLEGAL_DATA_ADDRESS) from None
