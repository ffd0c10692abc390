"""Per-meter health: running counts of how each meter answers, kept by its bus worker.

Pure data with small update methods, no I/O: the bus worker feeds every failed attempt
(:meth:`MeterStats.record_error`, so an answer garbled once and repaired by a retry still shows) and
every finished poll (:meth:`MeterStats.record_poll`, and :meth:`MeterStats.judge` for the values it
decoded). :meth:`MeterStats.snapshot` turns the counts into
the wire :class:`~kilowatch.mqtt_contract.MeterHealth` that the status topic and the Prometheus
endpoint both publish, so the two never disagree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from agent.breaker import BreakerState
from agent.clock import now_ms
from agent.errors import (
    AgentError,
    CrcError,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    WrongUnit,
)
from agent.poller import NOT_AVAILABLE, Poll
from kilowatch.counters import went_backwards
from kilowatch.mqtt_contract import MeterHealth
from kilowatch.quantities import QUANTITIES, Kind

PLAUSIBLE_AGAIN_POLLS = 3
"""Clean polls in a row that clear a meter's `implausible` flag: a meter answering random words decodes
plausibly now and then, and its flag (and event) must not flap with it."""


@dataclass(frozen=True)
class CounterReset:
    """An energy counter that went backwards (:func:`~kilowatch.counters.went_backwards`) since the
    meter's previous poll."""

    quantity: str
    before: float
    after: float


@dataclass(kw_only=True)
class MeterStats:
    """What one meter has done since `since` (UTC ms, the agent's start)."""

    since: int = field(default_factory=now_ms)
    polls: int = 0
    successes: int = 0
    skipped: int = 0
    last_latency_s: float | None = None
    latency_total_s: float = 0.0
    timeouts: int = 0
    crc_errors: int = 0
    wrong_unit: int = 0
    malformed: int = 0
    exceptions: Counter[int] = field(default_factory=Counter)
    """Modbus exception responses by code."""
    last_good_ts: int | None = None
    counter_resets: int = 0
    implausible_values: int = 0
    implausible: bool = False
    """The meter answered impossible values and has not had PLAUSIBLE_AGAIN_POLLS clean polls since."""
    clean_polls: int = 0
    """Polls in a row that decoded values and no impossible one."""
    last_counters: dict[str, float] = field(default_factory=dict)
    """Each energy counter's last value read, to catch one going backwards."""

    def record_error(self, error: AgentError) -> None:
        """One failed attempt; a bus that is down is the bus's problem, not the meter's, and not counted."""
        match error:
            case ModbusTimeout():
                self.timeouts += 1
            case CrcError():
                self.crc_errors += 1
            case WrongUnit():
                self.wrong_unit += 1
            case MalformedResponse():
                self.malformed += 1
            case ModbusExceptionResponse(code=code):
                self.exceptions[code] += 1

    def record_poll(self, result: Poll, *, latency_s: float) -> list[CounterReset]:
        """One finished poll. It succeeded when every request was answered: a value the meter reports
        as not available (NaN sentinel) is the meter's answer, any other missing value is a failure.

        Returns the energy counters that went backwards: a reset or a replaced meter, never negative
        consumption (the collector books no energy across it either).
        """
        steps = []
        for name, value in result.values.items():
            if QUANTITIES[name].kind is not Kind.COUNTER:
                continue
            before = self.last_counters.get(name)
            if before is not None and went_backwards(before, value):
                steps.append(CounterReset(name, before, value))
            self.last_counters[name] = value
        self.counter_resets += len(steps)
        self.polls += 1
        self.last_latency_s = latency_s
        self.latency_total_s += latency_s
        if not result.failures and all(why == NOT_AVAILABLE for why in result.errors.values()):
            self.successes += 1
            self.last_good_ts = result.ts
        return steps

    def judge(self, result: Poll) -> bool:
        """Count a finished poll's impossible values and update the `implausible` flag; whether the flag
        changed (set by the first impossible value, cleared by PLAUSIBLE_AGAIN_POLLS clean polls)."""
        self.implausible_values += len(result.bad)
        if result.bad:
            self.clean_polls = 0
            changed, self.implausible = not self.implausible, True
            return changed
        if result.values:
            self.clean_polls += 1
            if self.implausible and self.clean_polls >= PLAUSIBLE_AGAIN_POLLS:
                self.implausible = False
                return True
        return False

    def record_skip(self) -> None:
        """A cycle in which the open breaker kept the meter off the bus."""
        self.skipped += 1

    def snapshot(self, *, bus: str, breaker: BreakerState) -> MeterHealth:
        """The counts as the wire model, with the meter's bus and breaker state."""
        return MeterHealth(
            bus=bus,
            since=self.since,
            polls=self.polls,
            successes=self.successes,
            success_rate=self.successes / self.polls if self.polls else None,
            skipped=self.skipped,
            last_latency_s=self.last_latency_s,
            mean_latency_s=self.latency_total_s / self.polls if self.polls else None,
            timeouts=self.timeouts,
            crc_errors=self.crc_errors,
            wrong_unit=self.wrong_unit,
            malformed=self.malformed,
            exceptions=dict(sorted(self.exceptions.items())),
            last_good_ts=self.last_good_ts,
            counter_resets=self.counter_resets,
            implausible_values=self.implausible_values,
            implausible=self.implausible,
            breaker="open" if breaker is BreakerState.OPEN else "closed",
        )
