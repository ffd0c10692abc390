"""A circuit breaker per meter, counted in poll cycles: pure, no clock, no I/O.

A meter that stops answering costs its bus a timeout on every cycle; on a half-duplex RS-485 line that
time is taken from every other meter. After a few failed polls in a row the breaker opens and the meter is
skipped for a number of cycles that doubles with each failed probe (up to a cap), then probed with one
poll; one success closes it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_THRESHOLD = 3
"""Failed polls in a row that open the breaker: one lost answer or a brief outage does not."""
DEFAULT_MAX_SKIP = 2
"""Most cycles skipped between probes: a meter that comes back is polled again within this many cycles
(plus those its probe waits for time, see :mod:`agent.bus_worker`). Probes are cheap, being capped by the
time left in their cycle, so this stays short."""


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Polled every cycle."""
    OPEN = "open"
    """Skipped; probed when its skip runs out."""


class Transition(StrEnum):
    """A change worth a log line."""

    OPENED = "opened"
    CLOSED = "closed"


@dataclass(kw_only=True)
class Breaker:
    """Decides, cycle by cycle, whether to poll one meter."""

    threshold: int = DEFAULT_THRESHOLD
    max_skip: int = DEFAULT_MAX_SKIP
    failures: int = 0
    """Failed polls in a row."""
    skip: int = 0
    """Cycles to skip after the last failed probe (0 while closed)."""
    _left: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.max_skip < 1:
            raise ValueError("threshold and max_skip must be at least 1")

    @property
    def state(self) -> BreakerState:
        return BreakerState.OPEN if self.skip else BreakerState.CLOSED

    @property
    def due(self) -> bool:
        """Whether this cycle's :meth:`should_poll` will say yes."""
        return not self._left

    def should_poll(self) -> bool:
        """Call once per cycle: whether this cycle polls the meter (always when closed; when open, only
        once the skip has run out, as a probe; a probe not made stays due)."""
        if self._left:
            self._left -= 1
            return False
        return True

    def record(self, ok: bool) -> Transition | None:
        """The outcome of a poll this breaker allowed; returns a transition to log, if any."""
        if ok:
            was_open = self.skip > 0
            self.failures = self.skip = self._left = 0
            return Transition.CLOSED if was_open else None
        self.failures += 1
        if self.failures < self.threshold:
            return None
        opening = self.skip == 0
        self.skip = 1 if opening else min(self.skip * 2, self.max_skip)
        self._left = self.skip
        return Transition.OPENED if opening else None
