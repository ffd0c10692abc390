"""Which read requests fetch a profile's registers: pure, no I/O.

Fewer requests means a shorter poll on a slow RS-485 bus, so contiguous registers are read together, up
to what the meter accepts in one request. Registers separated by a gap are never merged: real meters
answer exception 2 (illegal data address) for a request that touches an unmapped register.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

from kilowatch.profiles import Profile, Register, Table


@dataclass(frozen=True)
class Request:
    """One read request and the registers its answer holds, in address order."""

    table: Table
    address: int
    count: int
    registers: tuple[Register, ...]

    @property
    def end(self) -> int:
        """First address after this request."""
        return self.address + self.count


def plan(profile: Profile) -> list[Request]:
    """The read requests for every register of `profile`, by table then address."""
    quirks = profile.quirks
    ordered = sorted(profile.registers, key=lambda r: (r.table.value, r.address))
    requests: list[Request] = []
    for table, registers in groupby(ordered, key=lambda r: r.table):
        current: Request | None = None
        for reg in registers:
            if (
                current is not None
                and not quirks.single_register_reads
                and reg.address == current.end
                and current.count + reg.count <= quirks.max_registers_per_request
            ):
                current = Request(
                    table, current.address, current.count + reg.count, (*current.registers, reg)
                )
            else:
                if current is not None:
                    requests.append(current)
                current = Request(table, reg.address, reg.count, (reg,))
        if current is not None:
            requests.append(current)
    return requests
