"""What a meter built from a device profile answers to a Modbus request; pure, no sockets.

The rules follow the Modbus application protocol's order of checks and what an Eastron SDM630 does:
a register count above the profile's limit is "illegal data value" (3); a read that touches any address the
profile does not define in that table, or splits a multi-register value, is "illegal data address" (2);
the meter is read-only, so every other function code is "illegal function" (1).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

from kilowatch.profiles import Located, Parameter, Profile, Ratios, Register, Table
from kilowatch.registers import encode


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


class RegisterImage:
    """The register map of one profile, answering reads from a snapshot of quantity values.

    Parameters (scale factors, ratios, model codes) hold the value the profile gives them; a ratio the
    meter does not hold itself is `ratios`, as the agent's config for this meter would say.
    """

    def __init__(self, profile: Profile, ratios: Ratios | None = None) -> None:
        self.profile = profile
        self.max_count = min(profile.quirks.max_registers_per_request, MAX_PDU_REGISTERS)
        self._starts: dict[Table, dict[int, Located]] = {table: {} for table in Table}
        for item in profile.located():
            self._starts[item.table][item.address] = item
        factors = profile.factors({p.name: p.value for p in profile.parameters}, ratios)
        self._factors = {name: factor or 1.0 for name, factor in factors.items()}

    def plan(self, function_code: int, address: int, count: int) -> list[Located] | ExceptionCode:
        """The registers a read covers, whole and without gaps, or the exception code it is refused with."""
        if function_code not in REGISTER_READS and function_code not in BIT_READS:
            return ExceptionCode.ILLEGAL_FUNCTION
        if not 1 <= count <= self.max_count:
            return ExceptionCode.ILLEGAL_DATA_VALUE
        table = REGISTER_READS.get(function_code)
        if table is None:
            return ExceptionCode.ILLEGAL_DATA_ADDRESS
        covered: list[Located] = []
        cursor, end = address, address + count
        while cursor < end:
            item = self._starts[table].get(cursor)
            if item is None or cursor + item.count > end:
                return ExceptionCode.ILLEGAL_DATA_ADDRESS
            covered.append(item)
            cursor += item.count
        return covered

    def raw(self, item: Located, values: Mapping[str, float]) -> float | int:
        """What the meter stores in `item` while it shows `values`."""
        if isinstance(item, Register):
            return item.stored(values[item.quantity], self._factors[item.quantity])
        assert isinstance(item, Parameter)
        return item.stored(item.value)

    def read(
        self, function_code: int, address: int, count: int, values: Mapping[str, float]
    ) -> list[int] | ExceptionCode:
        """The words a read returns (wire order), or the exception code it is refused with."""
        covered = self.plan(function_code, address, count)
        if isinstance(covered, ExceptionCode):
            return covered
        return [
            word for item in covered for word in encode(self.raw(item, values), item.type, item.word_order)
        ]
