"""Which read requests fetch a profile's registers in the least bus time: pure, no I/O.

On a 9600-baud RS-485 line every request costs a fixed overhead (frames' headers, two silences, the
meter's turnaround) plus two bytes per register, so merging requests pays until the registers read only
to bridge a gap cost more than the overhead saved. The planner finds the cheapest plan under
:class:`agent.bus_time.RtuTiming` exactly, within the meter's quirks: its largest request, single-value
reads, ranges it must never be asked for, and whether it answers for unmapped registers at all (most
answer exception 2, illegal data address, for a request that touches one, so gaps are bridged only when
the profile says ``fill_gaps``).

Method: registers of one table do not overlap, so sorted by address, any request reads a consecutive run
of them, and the cheapest request for a run spans exactly from its first to its last register. A plan is
therefore a partition of the sorted registers into runs, and dynamic programming over prefixes
(``best[j] = min over i of best[i] + cost(run i..j-1)``) finds the optimal one in O(n²) time at most; every
constraint only tightens as a run grows leftwards, so the inner loop stops at the first violation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.bus_time import RtuTiming, SerialLine
from kilowatch.profiles import Located, Profile, Quirks, Table

TIE_S = 1e-12
"""Plans whose costs differ by less than this are equal; the one with fewer requests wins."""


@dataclass(frozen=True)
class Request:
    """One read request and the registers (and parameters) its answer holds, in address order."""

    table: Table
    address: int
    count: int
    registers: tuple[Located, ...]

    @property
    def end(self) -> int:
        """First address after this request."""
        return self.address + self.count


def plan(profile: Profile, *, timing: RtuTiming | None = None) -> list[Request]:
    """The cheapest read requests for every register and parameter of `profile`, by table then address.

    `timing` is the line the meter is on; by default the profile's connection defaults with the default
    turnaround. On Modbus TCP the same model still ranks plans sensibly: fewer, shorter requests.
    """
    timing = timing or RtuTiming(line=SerialLine.of(profile.connection))
    requests: list[Request] = []
    for table in sorted(Table, key=lambda t: t.value):
        registers = sorted((r for r in profile.located() if r.table is table), key=lambda r: r.address)
        requests.extend(_plan_table(table, registers, profile.quirks, timing))
    return requests


def plan_time_s(requests: list[Request], timing: RtuTiming) -> float:
    """Line time of one poll that sends `requests`."""
    return sum(timing.read_s(r.count) for r in requests)


def _plan_table(table: Table, registers: list[Located], quirks: Quirks, timing: RtuTiming) -> list[Request]:
    single, fill, largest = quirks.single_register_reads, quirks.fill_gaps, quirks.max_registers_per_request
    forbidden = [f for f in quirks.forbidden_ranges if f.table is table]
    spans = [(r.address, r.address + r.count) for r in registers]
    read_s: dict[int, float] = {}
    # cost[j], requests[j]: the cheapest plan for registers[:j]; first[j]: where its last request starts.
    cost = [0.0] + [math.inf] * len(spans)
    requests = [0] * (len(spans) + 1)
    first = [0] * (len(spans) + 1)
    for j in range(1, len(spans) + 1):
        end = spans[j - 1][1]
        for i in range(j - 1, -1, -1):
            start = spans[i][0]
            if i < j - 1 and (single or (not fill and spans[i][1] != spans[i + 1][0])):
                break
            count = end - start
            if count > largest or (forbidden and any(f.overlaps(table, start, count) for f in forbidden)):
                break
            if count not in read_s:
                read_s[count] = timing.read_s(count)
            candidate = cost[i] + read_s[count]
            if candidate < cost[j] - TIE_S or (
                candidate <= cost[j] + TIE_S and requests[i] + 1 < requests[j]
            ):
                cost[j], requests[j], first[j] = candidate, requests[i] + 1, i
    plan: list[Request] = []
    j = len(spans)
    while j > 0:
        i = first[j]
        start, end = spans[i][0], spans[j - 1][1]
        plan.append(Request(table, start, end - start, tuple(registers[i:j])))
        j = i
    return plan[::-1]
