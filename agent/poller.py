"""One poll of one meter: run the read plan, decode what came back, say what could not be read.

A failed request costs only the values it would have carried; the rest of the meter is still reported.
A meter that cannot be reached (timeout, bus down, gateway reports it absent) is not asked again in
the same poll: on a slow bus every further timeout would delay every other meter. Failures are kept
per quantity with their reason, for logs and for ``kilowatch agent read``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agent.clock import now_ms
from agent.errors import AgentError
from agent.planner import plan
from agent.transport import RegisterReader
from kilowatch.mqtt_contract import ClockState, Quality, Reading
from kilowatch.profiles import Profile

log = logging.getLogger(__name__)

NOT_AVAILABLE = "not available (NaN or sentinel value)"


@dataclass
class Poll:
    """What one poll of a meter produced."""

    ts: int
    """UTC ms when the poll started."""
    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """Quantity -> why it has no value."""
    failures: list[AgentError] = field(default_factory=list)
    """Every failed request, in order."""


async def poll(reader: RegisterReader, profile: Profile, unit: int) -> Poll:
    """Read and decode every register of `profile` from `unit`; never raises an AgentError."""
    result = Poll(ts=now_ms())
    silent: AgentError | None = None
    for request in plan(profile):
        if silent is not None:
            result.errors.update((reg.quantity, str(silent)) for reg in request.registers)
            continue
        try:
            words = await reader.read(request.table, request.address, request.count, unit)
        except AgentError as exc:
            result.failures.append(exc)
            result.errors.update((reg.quantity, str(exc)) for reg in request.registers)
            if exc.unreachable:
                silent = exc
            continue
        for reg in request.registers:
            start = reg.address - request.address
            value = reg.decode(words[start : start + reg.count])
            if value is None:
                result.errors[reg.quantity] = NOT_AVAILABLE
            else:
                result.values[reg.quantity] = value
    return result


async def read_meter(
    reader: RegisterReader, profile: Profile, unit: int, meter_id: str, clock_state: ClockState
) -> Reading:
    """Poll one meter into the wire :class:`Reading`; failures become per-value ERROR quality."""
    result = await poll(reader, profile, unit)
    for failure in result.failures:
        log.warning("meter %s: %s", meter_id, failure)
    return Reading(
        meter=meter_id,
        profile=profile.id,
        ts=result.ts,
        values=result.values,
        quality=Quality.ERROR if result.errors else Quality.GOOD,
        value_quality=dict.fromkeys(result.errors, Quality.ERROR),
        clock=clock_state,
    )
