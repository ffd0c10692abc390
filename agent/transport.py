"""Reading registers off a bus: a one-method interface, its Modbus implementations and a test double.

Everything above this module (bus worker, poller, runner, CLI) depends only on :class:`RegisterReader`,
so unit tests feed canned register maps without sockets. Three transports share one reader: Modbus TCP,
Modbus RTU on a serial port, and RTU frames tunnelled through a serial server's TCP port; Modbus TCP goes
through the lean client of :mod:`agent.modbus_tcp`, the RTU framings through pymodbus. This is the one
place where either's exceptions become :mod:`agent.errors` exceptions.

A timeout of one unit never closes the port or connection: on a shared RS-485 line that would cost every
other meter a reconnect. Only a lost link (port gone, connection reset) closes it, and the next read
reopens it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import termios
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Protocol, Self

from agent.errors import (
    AgentError,
    BusUnavailable,
    CrcError,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    WrongUnit,
)
from agent.modbus_tcp import ModbusTcpClient, ModbusTcpException, ModbusTcpMalformed
from kilowatch.profiles import Table

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient | ModbusTcpClient

Trace = Callable[[bool, bytes], bytes]

ILLEGAL_DATA_ADDRESS = 2

BACKSTOP_TIMEOUT_S = 60.0
"""pymodbus' own response timeout, above any configured one: the reader times requests out itself (per
unit), so pymodbus never counts a silent unit towards closing the shared connection."""

RTU_MIN_FRAME = 4
"""Unit, function code and CRC: the shortest RTU frame."""

OPEN_ERRORS = (OSError, ValueError, termios.error)
"""What opening a port raises: missing, busy or forbidden (OSError, pyserial's SerialException among
them), settings pyserial rejects (ValueError) or the driver refuses (termios.error)."""


class RegisterReader(Protocol):
    """Reads `count` consecutive 16-bit registers of one unit; raises :class:`agent.errors.AgentError`.

    `timeout_s`, when given, replaces the reader's own response timeout for this one request (the bus
    worker shortens it for a meter that stopped answering, so it cannot make the others miss a tick).
    """

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]: ...


def crc16(data: bytes) -> int:
    """The Modbus RTU CRC of `data`, as the two bytes that follow it on the wire (low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return int.from_bytes(crc.to_bytes(2, "little"), "big")


def rtu_silence_error(bus: str, unit: int, address: int, heard: bytes) -> AgentError:
    """What a timed-out RTU request heard, as an error: nothing, another unit's valid frame, or garbage."""
    if not heard:
        return ModbusTimeout(bus, unit, address)
    body, check = heard[:-2], heard[-2:]
    if len(heard) >= RTU_MIN_FRAME and crc16(body) == int.from_bytes(check, "big") and heard[0] != unit:
        return WrongUnit(bus, unit, address, heard[0])
    return CrcError(bus, unit, address, heard)


def serial_open_problem(exc: BaseException) -> str:
    """A technician's reading of why a serial port did not open."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return "no such serial port"
    if code == errno.EACCES or "Permission denied" in text:
        return "permission denied (is the user in the dialout group?)"
    if code in {errno.EBUSY, errno.EAGAIN} or "lock" in text.lower():
        return "the port is busy (another program has it open)"
    if isinstance(exc, ValueError | termios.error) or "baud" in text.lower():
        return f"the port refused the settings ({text})"
    return text


@dataclass(frozen=True)
class TcpLink:
    """Modbus TCP: a meter with Ethernet, or a TCP-to-RS-485 gateway that speaks Modbus TCP."""

    host: str
    port: int = 502

    rtu_framing: ClassVar[bool] = False
    """Whether answers are RTU frames (CRC, no transaction id), so a timeout can be diagnosed."""

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, trace: Trace) -> ModbusClient:
        """The lean client of :mod:`agent.modbus_tcp` (nothing to trace: a late answer is dropped by its
        transaction id)."""
        return ModbusTcpClient(self.host, self.port)

    def open_problem(self) -> str:
        """Why opening failed: for TCP, refused or unreachable."""
        return f"cannot connect to {self}"


@dataclass(frozen=True)
class RtuOverTcpLink(TcpLink):
    """RTU frames through a serial server's TCP port (a converter in transparent / raw mode)."""

    rtu_framing: ClassVar[bool] = True

    def client(self, trace: Trace) -> ModbusClient:
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusTcpClient

        return AsyncModbusTcpClient(
            self.host,
            port=self.port,
            framer=FramerType.RTU,
            timeout=BACKSTOP_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            trace_packet=trace,
        )


@dataclass(frozen=True, kw_only=True)
class SerialPortLink:
    """Modbus RTU on a serial port of this machine."""

    device: str
    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    rtu_framing: ClassVar[bool] = True

    def __str__(self) -> str:
        return f"{self.device} at {self.baud} {self.bytesize}{self.parity}{self.stopbits}"

    def client(self, trace: Trace) -> ModbusClient:
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusSerialClient

        return AsyncModbusSerialClient(
            self.device,
            framer=FramerType.RTU,
            baudrate=self.baud,
            parity=self.parity,
            stopbits=self.stopbits,
            bytesize=self.bytesize,
            timeout=BACKSTOP_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            trace_packet=trace,
        )

    def try_open(self) -> Exception | None:
        """Open and close the port with pyserial (which pymodbus uses); what it raised, if anything."""
        import serial

        try:
            serial.serial_for_url(
                self.device,
                exclusive=True,
                baudrate=self.baud,
                parity=self.parity,
                stopbits=self.stopbits,
                bytesize=self.bytesize,
            ).close()
        except OPEN_ERRORS as exc:
            return exc
        return None

    def open_problem(self) -> str:
        """Open the port again to learn why it failed."""
        exc = self.try_open()
        if exc is not None:
            return f"{self.device}: {serial_open_problem(exc)}"
        return f"{self.device}: could not open it (it opens now: try again)"


Link = TcpLink | SerialPortLink


class ModbusReader:
    """One Modbus link, opened by the first read and reopened by the next read after it was lost.

    pymodbus' own reconnection and retries are switched off: the bus worker retries, per meter.

    Args:
        link: Where the bus is and how it is framed.
        bus: Bus name, for errors and logs.
        timeout_s: Response timeout of a unit not in `unit_timeouts`, and the connect timeout.
        unit_timeouts: Response timeout per unit (meters on one bus may need different patience).
        pause_after_connect_s: Silence after opening the link (some converters drop the first frame).
    """

    def __init__(
        self,
        link: Link,
        *,
        bus: str,
        timeout_s: float = 1.0,
        unit_timeouts: Mapping[int, float] | None = None,
        pause_after_connect_s: float = 0.0,
    ) -> None:
        # pymodbus logs, at ERROR, what this class reports itself (a late answer it skips, a frame with a
        # bad CRC); its lines would repeat every cycle without naming the meter.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.link = link
        self.bus = bus
        self.timeout_s = timeout_s
        self.unit_timeouts = dict(unit_timeouts or {})
        self.pause_after_connect_s = pause_after_connect_s
        self.opens = 0
        """How often the link was opened: a figure for health, and proof in tests that a silent unit
        did not cost the others a reconnect."""
        self._client: ModbusClient | None = None
        self._heard = b""

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus packet hook: remember what came back, to tell silence from garbage on a timeout."""
        if not sending:
            self._heard = data
        return data

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

    async def _connected(self) -> ModbusClient:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        try:
            client = self.link.client(self._trace)
            async with asyncio.timeout(self.timeout_s):
                opened = await client.connect()
        except (TimeoutError, *OPEN_ERRORS) as exc:
            raise BusUnavailable(self.bus, f"{self.link}: {serial_open_problem(exc)}") from exc
        if not opened:
            client.close()
            raise BusUnavailable(self.bus, self.link.open_problem())
        self._client = client
        self.opens += 1
        if self.pause_after_connect_s:
            await asyncio.sleep(self.pause_after_connect_s)
        return client

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        client = await self._connected()
        if isinstance(client, ModbusTcpClient):
            return await self._read_tcp(client, table, address, count, unit, timeout_s)
        from pymodbus.exceptions import ModbusException, ModbusIOException

        call = client.read_input_registers if table is Table.INPUT else client.read_holding_registers
        self._heard = b""
        try:
            async with asyncio.timeout(timeout_s or self.unit_timeouts.get(unit, self.timeout_s)):
                response = await call(address, count=count, device_id=unit)
        except TimeoutError as exc:
            if self.link.rtu_framing:
                raise rtu_silence_error(self.bus, unit, address, self._heard) from exc
            raise ModbusTimeout(self.bus, unit, address) from exc
        except ModbusIOException as exc:  # an answer pymodbus could not decode, or the link dropped
            if not client.connected:
                self.close()
                raise BusUnavailable(self.bus, f"{self.link}: {exc}") from exc
            raise MalformedResponse(self.bus, unit, address, str(exc)) from exc
        except (ModbusException, OSError) as exc:  # ConnectionException and the rest: the link is gone
            self.close()
            raise BusUnavailable(self.bus, f"{self.link}: {exc}") from exc
        if response.isError():
            raise ModbusExceptionResponse(self.bus, unit, address, int(response.exception_code))
        registers = list(response.registers)
        if len(registers) != count:
            raise MalformedResponse(
                self.bus, unit, address, f"asked for {count} registers, got {len(registers)}"
            )
        return registers

    async def _read_tcp(
        self,
        client: ModbusTcpClient,
        table: Table,
        address: int,
        count: int,
        unit: int,
        timeout_s: float | None,
    ) -> list[int]:
        try:
            async with asyncio.timeout(timeout_s or self.unit_timeouts.get(unit, self.timeout_s)):
                return await client.read_registers(table.function_code, address, count, unit)
        except TimeoutError as exc:
            raise ModbusTimeout(self.bus, unit, address) from exc
        except ModbusTcpException as exc:
            raise ModbusExceptionResponse(self.bus, unit, address, exc.code) from exc
        except ModbusTcpMalformed as exc:
            raise MalformedResponse(self.bus, unit, address, str(exc)) from exc
        except OSError as exc:  # the connection is gone
            self.close()
            raise BusUnavailable(self.bus, f"{self.link}: {exc}") from exc


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

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        self.requests.append((table, address, count, unit))
        if unit not in self.units:
            raise ModbusTimeout(self.bus, unit, address)
        words = self.units[unit]
        try:
            return [words[(table, a)] for a in range(address, address + count)]
        except KeyError:
            raise ModbusExceptionResponse(self.bus, unit, address, ILLEGAL_DATA_ADDRESS) from None
