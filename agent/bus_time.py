"""How long read requests keep a Modbus line busy: a pure cost model, no I/O.

The planner minimises this cost and ``kilowatch agent plan`` prints it, so a technician can tell before
installing whether 32 meters fit a one-second poll on a 9600-baud RS-485 line.

The model follows the Modbus over Serial Line specification (v1.02, 2.5.1): a character is a start bit,
the data bits, an optional parity bit and the stop bits; a frame ends with a silence of 3.5 characters,
fixed at 1.75 ms above 19200 baud. One read transaction is any pause the master keeps before it, the
request frame, its silence, the slave's turnaround (the time it takes to start answering), the response
frame and its silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kilowatch.profiles import Connection

Parity = Literal["N", "E", "O"]

DEFAULT_TURNAROUND_S = 0.010
"""Typical delay between the end of a request and the start of a meter's answer."""

FAST_LINE_BAUD = 19200
"""Above this rate the specification fixes the inter-frame silence instead of counting characters."""
FAST_LINE_SILENCE_S = 0.00175

RTU_READ_REQUEST_BYTES = 8
"""Unit, function, start (2), count (2), CRC (2)."""
RTU_READ_RESPONSE_OVERHEAD_BYTES = 5
"""Unit, function, byte count, CRC (2); two bytes per register follow the byte count."""
MBAP_HEADER_BYTES = 7
"""Modbus TCP replaces the unit byte and the CRC with this header (transaction, protocol, length, unit)."""


def rtu_read_bytes(count: int) -> tuple[int, int]:
    """(request, response) bytes on the wire for an RTU read (FC03/FC04) of `count` registers."""
    return RTU_READ_REQUEST_BYTES, RTU_READ_RESPONSE_OVERHEAD_BYTES + 2 * count


def tcp_read_bytes(count: int) -> tuple[int, int]:
    """(request, response) bytes of Modbus TCP application data for a read of `count` registers."""
    return MBAP_HEADER_BYTES + 5, MBAP_HEADER_BYTES + 2 + 2 * count


@dataclass(frozen=True, kw_only=True)
class SerialLine:
    """The character format of an RS-485 line."""

    baud: int
    parity: Parity = "N"
    bytesize: int = 8
    stopbits: int = 1

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError(f"baud must be positive, got {self.baud}")

    @classmethod
    def of(cls, connection: Connection) -> SerialLine:
        """The line a profile's connection defaults describe."""
        return cls(
            baud=connection.baud,
            parity=connection.parity,
            bytesize=connection.bytesize,
            stopbits=connection.stopbits,
        )

    @property
    def bits_per_char(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_s(self) -> float:
        return self.bits_per_char / self.baud

    @property
    def silence_s(self) -> float:
        """The 3.5-character silence that ends every frame."""
        return FAST_LINE_SILENCE_S if self.baud > FAST_LINE_BAUD else 3.5 * self.char_s

    def __str__(self) -> str:
        return f"{self.baud} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, kw_only=True)
class RtuTiming:
    """The cost model: seconds of line time per read transaction."""

    line: SerialLine
    turnaround_s: float = DEFAULT_TURNAROUND_S
    pause_s: float = 0.0
    """Extra silence the master keeps before each request (a meter's ``pause_between_requests_s``)."""

    def __post_init__(self) -> None:
        if self.turnaround_s < 0 or self.pause_s < 0:
            raise ValueError(f"turnaround {self.turnaround_s} and pause {self.pause_s} must not be negative")

    def transaction_s(self, request_bytes: int, response_bytes: int) -> float:
        """The pause, two frames each followed by its silence, and the slave's turnaround between them."""
        frames = (request_bytes + response_bytes) * self.line.char_s
        return self.pause_s + frames + 2 * self.line.silence_s + self.turnaround_s

    def read_s(self, count: int) -> float:
        """One FC03/FC04 read of `count` registers."""
        return self.transaction_s(*rtu_read_bytes(count))
