"""A scripted RS-485 line for transport tests: units that answer RTU reads on a real pseudo-terminal (or
a TCP socket, as a serial server would), each with a behaviour a field line shows: a clean answer,
silence, a slow answer, a corrupted CRC, an answer from the wrong unit id, a short answer, an exception.

The frames are built with pymodbus' own CRC, so the agent's CRC code is checked against another one.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

from pymodbus.framer import FramerRTU

READ_REQUEST_BYTES = 8
OTHER_UNIT = 99


def frame(body: bytes) -> bytes:
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def answer(request: bytes, behaviour: str) -> tuple[bytes, float]:
    """The bytes a unit sends back for a read request, and after how many seconds."""
    unit, function = request[0], request[1]
    address, count = int.from_bytes(request[2:4], "big"), int.from_bytes(request[4:6], "big")
    words = [(address + i) & 0xFFFF for i in range(count)]
    if behaviour == "short":
        words = words[:-1]
    payload = b"".join(w.to_bytes(2, "big") for w in words)
    good = frame(bytes([unit, function, len(payload)]) + payload)
    kind, _, arg = behaviour.partition(":")
    match kind:
        case "ok" | "short":
            return good, 0.0
        case "slow":
            return good, float(arg)
        case "crc":
            return good[:-1] + bytes([good[-1] ^ 0xFF]), 0.0
        case "other":
            return frame(bytes([OTHER_UNIT]) + good[1:-2]), 0.0
        case "exception":
            return frame(bytes([unit, function | 0x80, int(arg)])), 0.0
    raise ValueError(f"unknown behaviour {behaviour!r}")


class RtuResponder:
    """Splits a byte stream into read requests and answers them per unit; unknown units stay silent."""

    def __init__(self, units: Mapping[int, str], write: Callable[[bytes], object]) -> None:
        self.units = dict(units)
        self._write = write
        self._buffer = b""
        self.requests: list[int] = []
        """Unit of every request heard, in order."""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= READ_REQUEST_BYTES:
            request, self._buffer = self._buffer[:READ_REQUEST_BYTES], self._buffer[READ_REQUEST_BYTES:]
            assert frame(request[:-2]) == request, f"the agent sent a bad frame: {request.hex()}"
            self.requests.append(request[0])
            behaviour = self.units.get(request[0])
            if behaviour is not None:
                data, delay = answer(request, behaviour)
                asyncio.get_running_loop().call_later(delay, self._write, data)


class PtyLine:
    """Units behind the far end of a pseudo-terminal; the agent opens :attr:`path` as its serial port."""

    def __init__(self, units: Mapping[int, str]) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.responder = RtuResponder(units, lambda data: os.write(self._master, data))

    def _readable(self) -> None:
        try:
            self.responder.feed(os.read(self._master, 4096))
        except BlockingIOError:
            return

    async def __aenter__(self) -> Self:
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        os.close(self._master)
        os.close(self._slave)


class TcpSerialServer:
    """A serial server in transparent mode: RTU frames over a TCP connection."""

    def __init__(self, units: Mapping[int, str]) -> None:
        self.units = units
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        responder = RtuResponder(self.units, writer.write)
        while data := await reader.read(4096):
            responder.feed(data)
        writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
