"""Exponential backoff with jitter, for reconnecting to a broker that is down.

Jitter matters at scale: after a broker restart, a province of gateways must not reconnect in lockstep.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from `first_s` up to `max_s`, each drawn uniformly from its upper half."""

    def __init__(self, *, first_s: float = 1.0, max_s: float = 60.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got first_s={first_s}, max_s={max_s}")
        self.first_s = first_s
        self.max_s = max_s
        self._ceiling = first_s

    def next_delay(self) -> float:
        """The wait before the next attempt; each call doubles the ceiling for the one after."""
        ceiling = self._ceiling
        self._ceiling = min(self._ceiling * 2, self.max_s)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """After a success, start again from `first_s`."""
        self._ceiling = self.first_s
