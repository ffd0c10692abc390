"""One poll of one meter: run the read plan, decode what came back, say what could not be read.

A failed request costs only the values it would have carried; the rest of the meter is still reported.
A meter that cannot be reached (timeout, bus down, gateway reports it absent) is not asked again in
the same poll: on a slow bus every further timeout would delay every other meter. Failures are kept
per quantity with their reason, for the bus worker's logs and for ``kilowatch agent read``.

A value that decodes outside its quantity's physical range (:func:`kilowatch.quantities.out_of_range`) is
the meter's answer, but not a measurement: it is kept apart with its reason and sent as ``bad``, never as
a value (a meter answering random words, the wrong unit answering, a wrong word order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.clock import boottime_ms, now_ms
from agent.decoder import PlanDecoder
from agent.errors import AgentError
from agent.planner import Request, plan
from agent.transport import RegisterReader
from kilowatch.mqtt_contract import ClockState, Quality, Reading
from kilowatch.profiles import Profile, Ratios, Register
from kilowatch.quantities import out_of_range

NOT_AVAILABLE = "not available (NaN or sentinel value)"


@dataclass
class Poll:
    """What one poll of a meter produced."""

    ts: int
    """UTC ms when the poll started."""
    mono_ms: int = field(default_factory=boottime_ms)
    """CLOCK_BOOTTIME ms at the same moment (see :mod:`agent.clock`)."""
    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """Quantity -> why it has no value."""
    bad: dict[str, str] = field(default_factory=dict)
    """Quantity -> why its decoded value is impossible (sent as bad)."""
    failures: list[AgentError] = field(default_factory=list)
    """Every failed request, in order."""

    @classmethod
    def unread(cls, profile: Profile, reason: str) -> Poll:
        """A poll that asked nothing (the meter is skipped, the bus is down): every quantity errs."""
        return cls(ts=now_ms(), errors=dict.fromkeys((reg.quantity for reg in profile.registers), reason))


async def poll(
    reader: RegisterReader,
    profile: Profile,
    unit: int,
    requests: Sequence[Request] | None = None,
    ratios: Ratios | None = None,
    decoder: PlanDecoder | None = None,
) -> Poll:
    """Read and decode every register of `profile` from `unit`; never raises an AgentError.

    `requests` is the read plan when the caller keeps one (the bus worker plans each meter once), and
    `decoder` that plan compiled (:class:`agent.decoder.PlanDecoder`, built here when not given); `ratios`
    the meter's configured CT/VT ratios. Every answer is kept as words first, because a value may need a
    parameter (a scale factor, a ratio) that another request reads.
    """
    result = Poll(ts=now_ms())
    silent: AgentError | None = None
    requests = plan(profile) if requests is None else requests
    answers: list[list[int] | None] = []
    unread: dict[str, str] = {}
    """Parameter or quantity -> why its words are missing."""
    for request in requests:
        answers.append(None)
        if silent is not None:
            unread.update((item.label, str(silent)) for item in request.registers)
            continue
        try:
            answers[-1] = await reader.read(request.table, request.address, request.count, unit)
        except AgentError as exc:
            result.failures.append(exc)
            unread.update((item.label, str(exc)) for item in request.registers)
            if exc.unreachable:
                silent = exc
    decoded = (decoder or PlanDecoder(profile, requests, ratios)).decode(answers)
    if silent is not None and not decoded:  # nothing answered: no need to go through the registers
        result.errors = dict.fromkeys((reg.quantity for reg in profile.registers), str(silent))
        return result
    for reg in profile.registers:
        value = decoded.get(reg.quantity)
        if value is not None:
            if (why := out_of_range(reg.quantity, value)) is not None:
                result.bad[reg.quantity] = why
            else:
                result.values[reg.quantity] = value
        elif reg.quantity in unread:
            result.errors[reg.quantity] = unread[reg.quantity]
        elif reg.quantity in decoded:
            result.errors[reg.quantity] = NOT_AVAILABLE
        else:
            needed = [reg.scale_factor, *_ratio_parameters(profile, reg)]
            why = next((unread[n] for n in needed if n in unread), NOT_AVAILABLE)
            result.errors[reg.quantity] = f"{why} (reading a parameter it needs)"
    return result


def _ratio_parameters(profile: Profile, reg: Register) -> list[str | None]:
    names = profile.ratio_registers
    return [names.ct if reg.ct_scaled else None, names.vt if reg.vt_scaled else None]


def to_reading(result: Poll, profile: Profile, meter_id: str, clock_state: ClockState) -> Reading:
    """A poll as the wire :class:`Reading`; what could not be read gets per-value ERROR quality, what
    decoded to an impossible value BAD quality and its reason. A meter not read at all (no answer,
    breaker open, bus down) is one ERROR reading without a list of its quantities: the contract's
    "not read" reading, whose cause the agent logs once per change.

    Built without validation: the poll already holds the contract's rules (known quantities, finite
    values within their ranges, bad values apart), and this runs for every meter every cycle."""
    unread = not result.values and not result.bad and len(result.errors) == len(profile.registers)
    return Reading.model_construct(
        meter=meter_id,
        profile=profile.id,
        ts=result.ts,
        values=result.values,
        quality=Quality.ERROR if result.errors else Quality.BAD if result.bad else Quality.GOOD,
        value_quality={}
        if unread
        else dict.fromkeys(result.bad, Quality.BAD) | dict.fromkeys(result.errors, Quality.ERROR),
        value_reasons=result.bad,
        clock=clock_state,
        mono_ms=result.mono_ms,
    )
