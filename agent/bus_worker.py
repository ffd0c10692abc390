"""One worker per bus: the only way onto its wire, so one request is on it at a time (RS-485 is half
duplex, and a Modbus TCP gateway serialises its serial side anyway).

Every transaction goes through :meth:`BusWorker.request`, which holds the bus for one request and its
retries, keeps the meter's pause between requests, and gives each meter its own timeout and retries. A
circuit breaker per meter skips a meter that stopped answering, so a dead meter costs the bus only its
own bounded budget, and less once the breaker opens. A lost port or connection is a bus problem, not a
meter's: the rest of that cycle is reported unread and no breaker counts it.

A meter whose last poll failed is a suspect: it is polled after the others, as a probe, in which
silence is not retried (a garbled answer is). The probes of a cycle share the time left before the next
tick: each gets an equal share of what is left among the probes still due, at least :data:`PROBE_FLOOR`
of its timeout and at most all of it; a probe that no longer fits waits for the next cycle, first in
line (the first probe of a cycle is always made, so probes never stop altogether). So dead meters,
however many, cannot make the live ones miss a tick, and a meter that answers again is heard within a
few cycles. A probe that has waited :data:`STARVED_CYCLES` cycles
gets its whole timeout anyway (one per cycle; that tick is lost): a slow meter on a saturated bus must
still be able to answer and recover.

Logs follow state, not cycles: a meter's problem is logged when it appears or changes and when it ends,
a breaker when it opens or closes, and a summary per bus every few minutes while anything is wrong. So do
events: a meter whose answers decode to impossible values (see :meth:`agent.health.MeterStats.judge`) is
reported once when it starts and once when it reads plausibly again, not every cycle.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from agent.breaker import Breaker, Transition
from agent.bus_time import RtuTiming
from agent.config import Bus, EffectiveTiming, RtuBus, RtuOverTcpBus
from agent.decoder import PlanDecoder
from agent.errors import AgentError, BusUnavailable, ModbusTimeout
from agent.health import PLAUSIBLE_AGAIN_POLLS, MeterStats
from agent.planner import Request, plan
from agent.poller import Poll, poll, to_reading
from agent.transport import RegisterReader
from kilowatch.mqtt_contract import ClockState, GatewayEventKind, Quality, Reading
from kilowatch.profiles import Profile, Ratios, Table

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 300.0
"""Seconds between a bus's summary log lines while any of its meters has a problem."""
TICK_MARGIN = 0.05
"""Share of the poll interval kept free before the next tick, for decoding and publishing a cycle."""
PROBE_FLOOR = 0.25
"""Least share of its timeout a probe is given: a meter's normal answer comes well within it."""
STARVED_CYCLES = 10
"""Cycles a probe waits for time before it is given its whole timeout anyway."""

Report = Callable[[GatewayEventKind, str], None]
"""Where a worker sends a gateway event (the spool, which publishes it): its kind and detail."""


def next_tick(now: float, interval: float) -> float:
    """The first multiple of `interval` (seconds since the epoch) strictly after `now`."""
    return (math.floor(now / interval) + 1) * interval


@dataclass
class MeterSlot:
    """One meter as its bus worker keeps it: what to ask, how patiently, and how it has been doing."""

    id: str
    unit: int
    profile: Profile
    timing: EffectiveTiming
    requests: Sequence[Request]
    ratios: Ratios = field(default_factory=Ratios)
    """The meter's configured CT/VT ratios."""
    decoder: PlanDecoder | None = None
    """`requests` compiled for decoding; built from them when not given."""
    breaker: Breaker = field(default_factory=Breaker)
    health: MeterStats = field(default_factory=MeterStats)
    """Counts since the agent started, for the status topic and the metrics endpoint."""
    problem: str | None = None
    """Kind of the last logged problem (the error's class), None while the meter reads cleanly."""
    polled: int = 0
    good: int = 0
    skipped: int = 0
    """Since the last summary."""
    waiting: int = 0
    """Cycles its due probe has waited for time."""

    def __post_init__(self) -> None:
        if self.decoder is None:
            self.decoder = PlanDecoder(self.profile, self.requests, self.ratios)

    @property
    def suspect(self) -> bool:
        return bool(self.breaker.failures)


def slots(bus: Bus) -> list[MeterSlot]:
    """The meters of a configured bus, each planned once for the bus's line (RTU) or its profile's.
    Meters alike (profile, quantities, ratios) share one plan and decoder: 200 meters cost the memory of
    a few."""
    timing = RtuTiming(line=bus.line) if isinstance(bus, RtuBus | RtuOverTcpBus) else None
    shared: dict[tuple[object, ...], tuple[Profile, list[Request], PlanDecoder]] = {}
    out = []
    for meter in bus.meters:
        key = (meter.profile, tuple(meter.quantities or bus.quantities or ()), meter.ct_ratio, meter.vt_ratio)
        if key not in shared:
            profile = bus.profile_of(meter)
            requests = plan(profile, timing=timing)
            shared[key] = profile, requests, PlanDecoder(profile, requests, meter.ratios)
        profile, requests, decoder = shared[key]
        out.append(
            MeterSlot(
                id=meter.id,
                unit=meter.unit,
                profile=profile,
                timing=bus.timing_of(meter),
                requests=requests,
                ratios=meter.ratios,
                decoder=decoder,
            )
        )
    return out


def probe_timing(
    timing: EffectiveTiming, left_s: float, due: int, *, first: bool = False, starved: bool = False
) -> EffectiveTiming | None:
    """How patiently to probe a suspect with `left_s` seconds before the next tick and `due` probes
    (this one included) still to make in it: for an equal share of the time left, at least
    :data:`PROBE_FLOOR` of its timeout; None when that does not fit (it waits for the next cycle), unless
    it is the cycle's `first`. A `starved` probe gets its whole timeout (see the module's docstring)."""
    if starved:
        return timing
    floor = timing.timeout_s * PROBE_FLOOR
    if left_s < floor and not first:
        return None
    return replace(timing, timeout_s=min(timing.timeout_s, max(left_s / due, floor)))


class _MeterChannel:
    """A :class:`RegisterReader` for one meter that goes through its bus worker."""

    def __init__(self, worker: BusWorker, timing: EffectiveTiming, *, probe: bool = False) -> None:
        self._worker = worker
        self._timing = timing
        self._probe = probe

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        timing = self._timing if timeout_s is None else replace(self._timing, timeout_s=timeout_s)
        return await self._worker.request(timing, table, address, count, unit, probe=self._probe)


class BusWorker:
    """Polls the meters of one bus, one transaction at a time.

    Args:
        name: Bus name, for logs.
        reader: The bus's transport; nothing else may use it while the worker runs.
        meters: The meters, polled in this order every cycle.
        summary_every_s: Seconds between summary log lines while something is wrong.
        report: Where to send the events of meters that start or stop answering impossible values;
            None: logged only.
    """

    def __init__(
        self,
        *,
        name: str,
        reader: RegisterReader,
        meters: Sequence[MeterSlot],
        summary_every_s: float = SUMMARY_EVERY_S,
        report: Report | None = None,
    ) -> None:
        self.name = name
        self.report = report
        self.reader = reader
        self.meters = list(meters)
        self.summary_every_s = summary_every_s
        self.down: str | None = None
        """Why the bus is unavailable, None while it works."""
        self._lock = asyncio.Lock()
        self._health = {slot.unit: slot.health for slot in self.meters}
        self._quiet_since = 0.0
        """Monotonic time the bus last finished a transaction."""
        self._summary_at = time.monotonic() + summary_every_s
        self._overrunning = False

    def channel(self, timing: EffectiveTiming) -> RegisterReader:
        """A reader for one meter (with its timing) that shares this bus; for polls and ad-hoc reads."""
        return _MeterChannel(self, timing)

    async def request(
        self,
        timing: EffectiveTiming,
        table: Table,
        address: int,
        count: int,
        unit: int,
        *,
        probe: bool = False,
    ) -> list[int]:
        """One read and its retries, alone on the bus; retried only when the answer was lost or garbled
        (for a `probe`, only when garbled)."""
        async with self._lock:
            for attempt in range(timing.retries + 1):
                wait = self._quiet_since + timing.pause_between_requests_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    return await self.reader.read(table, address, count, unit, timeout_s=timing.timeout_s)
                except AgentError as exc:
                    if unit in self._health:
                        self._health[unit].record_error(exc)
                    if (
                        not exc.retryable
                        or attempt == timing.retries
                        or (probe and isinstance(exc, ModbusTimeout))
                    ):
                        raise
                    log.debug("bus %s unit %d: %s; retrying", self.name, unit, exc)
                finally:
                    self._quiet_since = time.monotonic()
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def cycle(self, clock: ClockState, deadline: float | None = None) -> list[Reading]:
        """Poll every meter once (skipping those whose breaker is open); one reading per meter, in
        configured order. `deadline` (monotonic) is when the next cycle is due; suspects go last and are
        kept within it when they can be."""
        results: dict[str, Poll] = {}
        down: BusUnavailable | None = None
        live = [slot for slot in self.meters if not slot.suspect]
        probes = sorted((slot for slot in self.meters if slot.suspect), key=lambda slot: -slot.waiting)
        due = sum(slot.breaker.due for slot in probes)
        starved_allowed = first = True
        for slot in live + probes:
            if down is not None:
                results[slot.id] = Poll.unread(slot.profile, str(down))
            elif not slot.breaker.should_poll():
                slot.skipped += 1
                slot.health.record_skip()
                results[slot.id] = Poll.unread(slot.profile, "not polled: stopped answering, breaker open")
            else:
                timing = slot.timing
                if slot.suspect:
                    starved = starved_allowed and slot.waiting >= STARVED_CYCLES
                    starved_allowed &= not starved
                    left = math.inf if deadline is None else deadline - time.monotonic()
                    cut = probe_timing(slot.timing, left, due, first=first, starved=starved)
                    due -= 1
                    if cut is None:
                        slot.waiting += 1
                        results[slot.id] = Poll.unread(slot.profile, "not polled: probe waits for time")
                        continue
                    timing, slot.waiting, first = cut, 0, False
                started = time.monotonic()
                result = results[slot.id] = await self._poll(slot, timing, probe=slot.suspect)
                down = next((f for f in result.failures if isinstance(f, BusUnavailable)), None)
                if down is None:
                    self._account(slot, result)
                    for step in slot.health.record_poll(result, latency_s=time.monotonic() - started):
                        log.warning(
                            "meter %s: %s went backwards, %g -> %g: counter reset or meter replaced",
                            slot.id,
                            step.quantity,
                            step.before,
                            step.after,
                        )
                    if slot.health.judge(result):
                        self._note_plausibility(slot, result)
        self._note_bus(down)
        self._maybe_summarise()
        return [to_reading(results[slot.id], slot.profile, slot.id, clock) for slot in self.meters]

    async def _poll(self, slot: MeterSlot, timing: EffectiveTiming, *, probe: bool) -> Poll:
        channel = _MeterChannel(self, timing, probe=probe)
        try:
            return await poll(channel, slot.profile, slot.unit, slot.requests, slot.ratios, slot.decoder)
        except Exception:  # one meter's bug must not stop the others; logged with its traceback
            log.exception("meter %s on bus %s: unexpected error; no reading this cycle", slot.id, self.name)
            return Poll.unread(slot.profile, "internal error, see the agent's log")

    def _note_bus(self, down: BusUnavailable | None) -> None:
        reason = None if down is None else down.reason
        if reason == self.down:
            return
        if reason is None:
            log.info("bus %s: available again", self.name)
        elif self.down is None:
            log.warning("bus %s: unavailable (%s); retrying every cycle", self.name, reason)
        else:
            log.warning("bus %s: still unavailable, now: %s", self.name, reason)
        self.down = reason

    def _account(self, slot: MeterSlot, result: Poll) -> None:
        """Count the poll, feed the breaker and log what changed."""
        slot.polled += 1
        slot.good += not result.errors
        answered = not any(f.unreachable for f in result.failures)
        first = result.failures[0] if result.failures else None
        kind = None if first is None else type(first).__name__
        for failure in result.failures:
            log.debug("meter %s: %s", slot.id, failure)
        if kind != slot.problem:
            if first is not None:
                log.warning("meter %s: %s", slot.id, first)
            elif slot.problem is not None:
                log.info("meter %s: reads cleanly again", slot.id)
            slot.problem = kind
        transition = slot.breaker.record(answered)
        if transition is Transition.OPENED:
            log.warning(
                "meter %s: not answering for %d polls; skipped for a growing number of cycles "
                "(up to %d) between probes",
                slot.id,
                slot.breaker.failures,
                slot.breaker.max_skip,
            )
        elif transition is Transition.CLOSED:
            log.info("meter %s: answering again; polled every cycle", slot.id)

    def _note_plausibility(self, slot: MeterSlot, result: Poll) -> None:
        """Log and report a meter that started, or stopped, answering impossible values."""
        where = f"meter {slot.id} (bus {self.name}, unit {slot.unit})"
        if slot.health.implausible:
            name, why = next(iter(result.bad.items()))
            kind = GatewayEventKind.METER_IMPLAUSIBLE
            detail = (
                f"{where}: {len(result.bad)} values impossible, e.g. {name}: {why}; sent as bad until "
                f"{PLAUSIBLE_AGAIN_POLLS} clean polls in a row"
            )
            log.warning("%s", detail)
        else:
            kind = GatewayEventKind.METER_PLAUSIBLE
            detail = f"{where}: reads plausibly again"
            log.info("%s", detail)
        if self.report is not None:
            self.report(kind, detail)

    def _maybe_summarise(self) -> None:
        now = time.monotonic()
        if now < self._summary_at:
            return
        self._summary_at = now + self.summary_every_s
        troubled = [s for s in self.meters if s.problem is not None or s.skipped]
        if troubled or self.down is not None:
            parts = [
                f"{s.id}: {s.good} of {s.polled} polls clean"
                + (f", {s.skipped} skipped (breaker {s.breaker.state})" if s.skipped else "")
                for s in troubled
            ]
            log.warning(
                "bus %s, last %g s: %s%s",
                self.name,
                self.summary_every_s,
                "; ".join(parts) or "no meter problems",
                f"; bus unavailable: {self.down}" if self.down else "",
            )
        for slot in self.meters:
            slot.polled = slot.good = slot.skipped = 0

    async def run(
        self,
        interval_s: float,
        clock: Callable[[], ClockState],
        submit: Callable[[list[Reading]], int | None],
    ) -> None:
        """Poll on clock-aligned ticks until cancelled, handing each cycle's readings to `submit`.

        Ticks are aligned on the wall clock (every 10 s: at :00, :10, ...) so readings from different
        buses and gateways line up; a cycle that overruns skips the ticks it missed.
        """
        while True:
            await asyncio.sleep(max(0.0, next_tick(time.time(), interval_s) - time.time()))
            started = time.monotonic()
            due = next_tick(time.time(), interval_s) - time.time() - TICK_MARGIN * interval_s
            readings = await self.cycle(clock(), deadline=started + due)
            seq = submit(readings)
            elapsed = time.monotonic() - started
            log.debug(
                "bus %s: cycle seq %s: %d readings, %d with errors, %.3f s",
                self.name,
                seq,
                len(readings),
                sum(r.quality is Quality.ERROR for r in readings),
                elapsed,
            )
            if (elapsed > interval_s) != self._overrunning:
                self._overrunning = not self._overrunning
                if self._overrunning:
                    log.warning(
                        "bus %s: a poll cycle took %.1f s, longer than poll_interval_s %g; ticks skipped",
                        self.name,
                        elapsed,
                        interval_s,
                    )
                else:
                    log.info("bus %s: poll cycles fit the interval again", self.name)
