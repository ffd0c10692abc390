"""The agent's exceptions: one base, and one subclass per way a meter read can fail.

Each carries the data a technician needs (bus, unit, address) and builds its own message, so a log line
says where to look. Library exceptions (pymodbus) are translated into these at one boundary, the
transport, and chained with ``from``; nothing above the transport sees a pymodbus type.
"""

from __future__ import annotations

from typing import ClassVar

MODBUS_EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


GATEWAY_FAILURES = frozenset({10, 11})
"""Exception codes a TCP-to-RS-485 gateway sends for a meter it cannot reach."""


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""

    UNREACHABLE: ClassVar[bool] = False
    RETRYABLE: ClassVar[bool] = False

    @property
    def unreachable(self) -> bool:
        """The meter cannot be reached at all, so its other registers need not be tried in this poll."""
        return self.UNREACHABLE

    @property
    def retryable(self) -> bool:
        """Asking again at once may succeed (the answer was lost or garbled, not refused)."""
        return self.RETRYABLE


class BusUnavailable(AgentError):
    """The bus itself cannot be used (TCP connection refused or lost, serial port missing)."""

    UNREACHABLE = True

    def __init__(self, bus: str, reason: str) -> None:
        self.bus = bus
        self.reason = reason
        super().__init__(f"bus {bus!r} unavailable: {reason}")


class MeterError(AgentError):
    """A read of one meter failed; says which bus, unit and register, then what went wrong."""

    def __init__(self, bus: str, unit: int, address: int, problem: str) -> None:
        self.bus = bus
        self.unit = unit
        self.address = address
        super().__init__(f"bus {bus!r} unit {unit}: {problem} reading register {address:#06x}")


class ModbusTimeout(MeterError):
    """A meter did not answer a read request in time."""

    UNREACHABLE = True
    RETRYABLE = True

    def __init__(self, bus: str, unit: int, address: int) -> None:
        super().__init__(bus, unit, address, "no answer")


class ModbusExceptionResponse(MeterError):
    """A meter answered a read request with a Modbus exception code."""

    def __init__(self, bus: str, unit: int, address: int, code: int) -> None:
        self.code = code
        name = MODBUS_EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(bus, unit, address, f"exception {code} ({name})")

    @property
    def unreachable(self) -> bool:
        return self.code in GATEWAY_FAILURES


class MalformedResponse(MeterError):
    """A meter answered, but not with what was asked for (e.g. fewer registers than requested)."""

    RETRYABLE = True

    def __init__(self, bus: str, unit: int, address: int, reason: str) -> None:
        self.reason = reason
        super().__init__(bus, unit, address, f"bad answer ({reason})")


class CrcError(MeterError):
    """Bytes came back but formed no valid RTU frame: noise, a wiring or termination fault, two units
    with the same id, or a baud rate or parity that does not match the meter's.

    Unreachable: still garbled after the retries, the rest of the poll would only spend the bus's time.
    """

    UNREACHABLE = True
    RETRYABLE = True

    def __init__(self, bus: str, unit: int, address: int, heard: bytes) -> None:
        self.heard = heard
        more = " ..." if len(heard) > 16 else ""
        problem = f"garbled answer (bad CRC or framing, {len(heard)} bytes: {heard[:16].hex(' ')}{more})"
        super().__init__(bus, unit, address, problem)


class WrongUnit(MeterError):
    """A valid answer came back from another unit id than the one asked (misconfigured meter address,
    or a late answer from a slow meter). Unreachable: the unit asked did not answer, whoever else did."""

    UNREACHABLE = True
    RETRYABLE = True

    def __init__(self, bus: str, unit: int, address: int, answered: int) -> None:
        self.answered = answered
        super().__init__(bus, unit, address, f"unit {answered} answered instead,")
