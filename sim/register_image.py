"""What a meter built from a device profile answers to a Modbus request; pure, no sockets.

The rules follow the Modbus application protocol's order of checks and what an Eastron SDM630 does:
a register count above the profile's limit is "illegal data value" (3); a read that touches any address the
profile does not define in that table, or splits a multi-register value, is "illegal data address" (2);
the meter is read-only, so every other function code is "illegal function" (1).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

from kilowatch.profiles import Profile, Register, Table
from kilowatch.registers import DataType, encode


class ExceptionCode(IntEnum):
    """Modbus exception codes the simulator answers with."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    GATEWAY_TARGET_FAILED_TO_RESPOND = 0x0B
    """A Modbus TCP gateway's answer for a unit id that is not on its bus."""


BIT_READS = frozenset({1, 2})
"""Read coils / discrete inputs: tables no metering profile defines."""
REGISTER_READS: dict[int, Table] = {3: Table.HOLDING, 4: Table.INPUT}
MAX_PDU_REGISTERS = 125
"""The protocol's own limit for one register read."""

_INTEGER_BITS = {
    DataType.INT16: 16, DataType.UINT16: 16, DataType.INT32: 32,
    DataType.UINT32: 32, DataType.INT64: 64, DataType.UINT64: 64,
}  # fmt: skip
_SIGNED = frozenset({DataType.INT16, DataType.INT32, DataType.INT64})


def raw_value(register: Register, value: float) -> float | int:
    """The number a meter stores for `value`: (value - offset) / scale, fitted to the register's type.

    Unsigned integers wrap around as real counters roll over; signed integers saturate.
    """
    raw = (value - register.offset) / register.scale
    bits = _INTEGER_BITS.get(register.type)
    if bits is None:
        return raw
    whole = round(raw)
    if register.type in _SIGNED:
        limit = 1 << (bits - 1)
        return min(limit - 1, max(-limit, whole))
    return whole % (1 << bits)


class RegisterImage:
    """The register map of one profile, answering reads from a snapshot of quantity values."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.max_count = min(profile.quirks.max_registers_per_request, MAX_PDU_REGISTERS)
        self._starts: dict[Table, dict[int, Register]] = {table: {} for table in Table}
        for reg in profile.registers:
            self._starts[reg.table][reg.address] = reg

    def plan(self, function_code: int, address: int, count: int) -> list[Register] | ExceptionCode:
        """The registers a read covers, whole and without gaps, or the exception code it is refused with."""
        if function_code not in REGISTER_READS and function_code not in BIT_READS:
            return ExceptionCode.ILLEGAL_FUNCTION
        if not 1 <= count <= self.max_count:
            return ExceptionCode.ILLEGAL_DATA_VALUE
        table = REGISTER_READS.get(function_code)
        if table is None:
            return ExceptionCode.ILLEGAL_DATA_ADDRESS
        covered: list[Register] = []
        cursor, end = address, address + count
        while cursor < end:
            reg = self._starts[table].get(cursor)
            if reg is None or cursor + reg.count > end:
                return ExceptionCode.ILLEGAL_DATA_ADDRESS
            covered.append(reg)
            cursor += reg.count
        return covered

    def read(
        self, function_code: int, address: int, count: int, values: Mapping[str, float]
    ) -> list[int] | ExceptionCode:
        """The words a read returns (wire order), or the exception code it is refused with."""
        covered = self.plan(function_code, address, count)
        if isinstance(covered, ExceptionCode):
            return covered
        return [
            word
            for reg in covered
            for word in encode(raw_value(reg, values[reg.quantity]), reg.type, reg.word_order)
        ]
