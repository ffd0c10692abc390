"""Simulated meters on Modbus TCP, on an RTU serial line, or RTU framed over TCP (a serial-to-Ethernet converter).

pymodbus frames the protocol (its MBAP and RTU framers decode requests and encode answers with their
CRC); the answer itself comes from the profile's :class:`~sim.register_image.RegisterImage`. The request
loop is ours rather than pymodbus' server because fault injection needs each request's own state: its
handler keeps one "last request" per connection, so a slow unit's late answer would leave with the unit id
of whatever request came next on the line.

Who answers what, as on real installations:

- On Modbus TCP a unit id that is not served gets exception 0x0B (gateway target failed to respond), as a
  TCP-to-RTU gateway answers for a meter that is not on its bus.
- On an RTU line (serial or RTU-over-TCP) nobody answers a unit id that is not served, nor a frame with a
  bad CRC: there is no meter with that address, and a meter ignores what it cannot read.
- Each request is answered on its own: a ``slow`` unit's answer goes on the wire when its delay is over,
  even if the master has meanwhile timed out and asked another unit, exactly as a late meter on a
  half-duplex RS-485 line does. A master must therefore drop answers from a unit it is not waiting for.
"""

from __future__ import annotations

import asyncio
import logging
import random
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal, Self, TextIO

from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse
from pymodbus.transport.serialtransport import create_serial_connection

from kilowatch.profiles import MAX_UNIT, Profile
from sim.clock import SimClock
from sim.faults import Fault, FaultKind, Scheduled
from sim.loads.office import building_meter
from sim.meter import MeterState, SimulatedMeter
from sim.register_image import ExceptionCode, RegisterImage

log = logging.getLogger(__name__)

Parity = Literal["N", "E", "O"]

FRAME_GAP_S = 0.1
"""Silence after which an incomplete RTU frame is dropped as noise. Modbus says 3.5 characters (4 ms at
9600 baud); pseudo-terminals and converters deliver bytes in bursts, so the simulator is more lenient."""


class SimServerError(RuntimeError):
    """The simulator could not start serving (the address is in use, the serial port missing or busy)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot serve Modbus on {endpoint}: {reason}")
        self.endpoint = endpoint


@dataclass(frozen=True)
class Unit:
    """One unit id on a line: the register map it serves, the meter behind it and when it misbehaves."""

    profile: Profile
    meter: MeterState
    faults: tuple[Scheduled, ...] = ()

    def fault(self, t: datetime) -> Fault | None:
        """The fault active at simulated time `t`, if any (the first listed wins)."""
        return next((s.fault for s in self.faults if s.active(t)), None)


class SimServer:
    """Serves meters on one line (a TCP listener or a serial port); use as ``async with SimServer(...)``.

    Args:
        units: Modbus unit ids (1-247) of a building of `profile` meters (unit 1 the main meter, the others
            smaller sub-meters), or each unit id's :class:`Unit` (a scenario's bus).
        profile: The register map every unit serves; only with unit ids.
        host: Address to listen on (Modbus TCP or RTU-over-TCP).
        port: TCP port; 0 picks a free one (read :attr:`port` after start).
        rtu: Serial device to serve an RTU line on (e.g. one end of a pseudo-terminal pair) instead of TCP.
        baud: Baud rate of the `rtu` line.
        parity: Parity of the `rtu` line (8 data bits, 1 stop bit).
        rtu_over_tcp: Serve RTU frames (with CRC) over TCP, as a serial-to-Ethernet converter does.
        faults: How some units misbehave, by unit id; see :mod:`sim.faults`. Only with unit ids: a
            :class:`Unit` carries its own.
        seed: Seed of the building's loads: the same seed replays the same loads, counters and garbage.
        speed: Simulated seconds per real second.
        update_interval: Simulated seconds between register refreshes of each meter.
        start: Simulated time when serving begins (timezone-aware); None means now.
        clock: A simulated clock shared with other servers (every bus of a scenario lives the same time);
            instead of `start` and `speed`.
        served_log: Where to write one line per read answered with registers: unit, function code,
            address, count and the UTC ms it was answered; the ground truth a test compares what reached
            the ledger with.
    """

    def __init__(
        self,
        *,
        units: Sequence[int] | Mapping[int, Unit],
        profile: Profile | None = None,
        host: str = "127.0.0.1",
        port: int = 5020,
        rtu: str | None = None,
        baud: int = 9600,
        parity: Parity = "N",
        rtu_over_tcp: bool = False,
        faults: Mapping[int, Fault] | None = None,
        seed: int = 1,
        speed: float = 1.0,
        update_interval: float = 1.0,
        start: datetime | None = None,
        clock: SimClock | None = None,
        served_log: TextIO | None = None,
    ) -> None:
        if not units:
            raise ValueError("serve at least one unit")
        ids = list(units)
        bad = [u for u in ids if not 1 <= u <= MAX_UNIT]
        if bad:
            raise ValueError(f"unit ids must be 1-{MAX_UNIT}, got {bad}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"unit ids must be unique, got {ids}")
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port must be 0-65535, got {port}")
        if rtu is not None and rtu_over_tcp:
            raise ValueError(
                "rtu= (a serial line) and rtu_over_tcp= (RTU frames over TCP) exclude each other"
            )
        if baud <= 0:
            raise ValueError(f"baud must be positive, got {baud}")
        if parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be N, E or O, got {parity!r}")
        if clock is not None and (start is not None or speed != 1.0):
            raise ValueError("clock= replaces start= and speed=; give one or the other")
        self.clock = clock or SimClock(start, speed)
        if isinstance(units, Mapping):
            if profile is not None or faults:
                raise ValueError("each Unit brings its profile and faults; give no profile= or faults=")
            self.served = dict(units)
        elif profile is None:
            raise ValueError("unit ids need a profile= to serve")
        else:
            self.served = self._building(profile, ids, dict(faults or {}), seed, update_interval)
        self.rtu_framing = rtu is not None or rtu_over_tcp
        crc_units = sorted(
            u for u, unit in self.served.items() if any(f.fault.kind is FaultKind.CRC for f in unit.faults)
        )
        if crc_units and not self.rtu_framing:
            raise ValueError(
                f"fault 'crc' (units {crc_units}) needs RTU framing (rtu= or rtu_over_tcp=): "
                "Modbus TCP frames carry no CRC"
            )
        self.units = sorted(self.served)
        self.profiles = sorted({unit.profile.id for unit in self.served.values()})
        self.host = host
        self.port = port
        self.rtu = rtu
        self.baud = baud
        self.parity: Parity = parity
        self._images = {unit.profile.id: RegisterImage(unit.profile) for unit in self.served.values()}
        self._garbage = random.Random(seed)
        self.noise = random.Random(f"crc/{seed}")
        """Which answers a `crc` fault with a share under 1 spoils: seeded, so a run repeats."""
        self._served_log = served_log
        self._listener: asyncio.Server | None = None
        self._sessions: set[_Session] = set()

    def _building(
        self, profile: Profile, units: list[int], faults: dict[int, Fault], seed: int, update_interval: float
    ) -> dict[int, Unit]:
        unserved = sorted(set(faults) - set(units))
        if unserved:
            raise ValueError(f"faults for units that are not served: {unserved}")

        def meter(unit: int) -> SimulatedMeter:
            return SimulatedMeter(
                building_meter(seed, unit), key=f"{seed}/unit-{unit}", supply=f"{seed}/building",
                epoch=self.clock.start, update_interval=update_interval,
            )  # fmt: skip

        return {
            unit: Unit(profile, meter(unit), (Scheduled(faults[unit]),) if unit in faults else ())
            for unit in units
        }

    @property
    def endpoint(self) -> str:
        """Where it serves, as the ready line and errors show it: ``rtu /dev/ttyS1 at 9600 8N1``, ``tcp h:p``."""
        if self.rtu is not None:
            return f"rtu {self.rtu} at {self.baud} 8{self.parity}1"
        shown_host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rtu-over-tcp' if self.rtu_framing else 'tcp'} {shown_host}:{self.port}"

    def values(self, unit: int) -> Mapping[str, float]:
        """What `unit` shows right now, by quantity name (the numbers behind its registers)."""
        return self.served[unit].meter.read(self.clock.now())

    def fault(self, unit: int) -> Fault | None:
        """How `unit` misbehaves right now, if it does."""
        served = self.served.get(unit)
        return None if served is None else served.fault(self.clock.now())

    async def start(self) -> None:
        if self._listener is not None or self._sessions:
            raise RuntimeError("the simulator is already serving")
        loop = asyncio.get_running_loop()
        if self.rtu is not None:
            line = _Session(self)
            try:
                await create_serial_connection(
                    loop, lambda: line, self.rtu,
                    baudrate=self.baud, bytesize=8, parity=self.parity, stopbits=1, timeout=0,
                )  # fmt: skip
            except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
                raise SimServerError(self.endpoint, str(exc)) from exc
            except termios.error as exc:  # the driver refuses the settings (baud rate, parity)
                raise SimServerError(self.endpoint, f"the port refuses these settings: {exc}") from exc
            await line.connected.wait()  # the transport hands itself over on a later loop turn
            return
        try:
            self._listener = await loop.create_server(lambda: _Session(self), self.host, self.port)
        except OSError as exc:
            raise SimServerError(self.endpoint, "the address is in use or not available here") from exc
        self.port = int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, drop every connection (or release the serial port) and every late answer."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for session in list(self._sessions):
            session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def answer(self, request: ModbusPDU) -> ModbusPDU | None:
        """The answer `request` gets, before delivery faults; None if nobody answers."""
        return self._respond(request.dev_id, request.function_code, request.transaction_id, request)

    def refuse_function(self, unit: int, function_code: int, transaction_id: int) -> ModbusPDU | None:
        """The answer to a function code pymodbus cannot even decode: "illegal function" if anyone answers."""
        return self._respond(unit, function_code, transaction_id, None)

    def _respond(
        self, unit: int, function_code: int, transaction_id: int, request: ModbusPDU | None
    ) -> ModbusPDU | None:
        """Who speaks (absent and dead units do not) and what: a fault's exception, the meter's answer, garbage."""
        fault = self.fault(unit)
        if unit not in self.served:
            if self.rtu_framing:
                return None
            words: list[int] | int = ExceptionCode.GATEWAY_TARGET_FAILED_TO_RESPOND
        elif fault is not None and fault.kind is FaultKind.DEAD:
            return None
        elif fault is not None and fault.code is not None:
            words = fault.code
        elif request is None:
            words = ExceptionCode.ILLEGAL_FUNCTION
        else:
            image = self._images[self.served[unit].profile.id]
            words = image.read(function_code, request.address, request.count, self.values(unit))
        if isinstance(words, int):
            return ExceptionResponse(function_code, words, device_id=unit, transaction=transaction_id)
        if fault is not None and fault.kind is FaultKind.GARBAGE:
            words = [self._garbage.getrandbits(16) for _ in words]
        if self._served_log is not None and request is not None:
            when = time.time_ns() // 1_000_000
            self._served_log.write(f"{unit} {function_code} {request.address} {request.count} {when}\n")
        response = ReadHoldingRegistersResponse if function_code == 3 else ReadInputRegistersResponse
        return response(registers=words, dev_id=unit, transaction_id=transaction_id)


class _Session(asyncio.Protocol):
    """One master's byte stream (a TCP connection or the serial line): frames in, answers out."""

    def __init__(self, server: SimServer) -> None:
        self._server = server
        decoder = DecodePDU(True)
        self._framer: FramerBase = _RtuFramer(decoder) if server.rtu_framing else FramerSocket(decoder)
        self._transport: asyncio.BaseTransport | None = None
        self._buffer = b""
        self._noise_timer: asyncio.TimerHandle | None = None
        self._late: set[asyncio.TimerHandle] = set()
        self.connected = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self.connected.set()
        self._server._sessions.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._server.rtu is not None:  # e.g. a USB adapter pulled out
            log.error("%s: the serial line failed, no longer serving: %s", self._server.endpoint, exc)
        self._forget()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._forget()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer:
            try:
                used, request = self._framer.handleFrame(self._buffer, 0, 0)
            except ModbusIOException:  # a well-framed request with a function code pymodbus does not know
                used, unit, transaction_id, pdu = self._framer.decode(self._buffer)
                self._buffer = self._buffer[used:]
                self._deliver(unit, self._server.refuse_function(unit, pdu[0], transaction_id))
                continue
            self._buffer = self._buffer[used:]
            if request is not None:
                self._deliver(request.dev_id, self._server.answer(request))
            elif not used:
                break  # the rest of a frame is still on its way
        if self._noise_timer is not None:
            self._noise_timer.cancel()
            self._noise_timer = None
        if self._buffer and self._server.rtu_framing:
            self._noise_timer = asyncio.get_running_loop().call_later(FRAME_GAP_S, self._drop_noise)

    def _deliver(self, unit: int, answer: ModbusPDU | None) -> None:
        """Put `answer` on the wire, late or with a broken CRC if `unit` is faulty that way."""
        if answer is None:
            return
        fault = self._server.fault(unit)
        frame = self._framer.buildFrame(answer)
        if fault is not None and fault.kind is FaultKind.CRC and self._server.noise.random() < fault.share:
            frame = frame[:-2] + bytes(b ^ 0xFF for b in frame[-2:])
        if fault is not None and fault.seconds is not None:
            late = asyncio.get_running_loop().call_later(fault.seconds, self._write_late, frame)
            self._late.add(late)
        else:
            self._write(frame)

    def _write_late(self, frame: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self._late = {handle for handle in self._late if handle.when() > now}  # keep the ones yet to fire
        self._write(frame)

    def _write(self, frame: bytes) -> None:
        if isinstance(self._transport, asyncio.WriteTransport) and not self._transport.is_closing():
            self._transport.write(frame)

    def _drop_noise(self) -> None:
        self._buffer = b""
        self._noise_timer = None

    def _forget(self) -> None:
        """Cancel every timer and leave the server's sessions, so nothing fires after the stream is gone."""
        for handle in (*self._late, self._noise_timer):
            if handle is not None:
                handle.cancel()
        self._late.clear()
        self._noise_timer = None
        self._transport = None
        self._server._sessions.discard(self)


class _RtuFramer(FramerRTU):
    """pymodbus' RTU framer, except that a frame consumes only its own bytes rather than the whole buffer.

    A master that timed out may send its next request right behind the previous one, and a pseudo-terminal
    or a TCP stream then delivers both in one read; pymodbus' framer would swallow the second.
    """

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        used, unit, tid, pdu = super().decode(data)
        if pdu:
            used = data.index(bytes([unit]) + pdu) + 1 + len(pdu) + 2  # unit id, PDU, CRC
        return used, unit, tid, pdu
