"""Exponential backoff with jitter, for reconnecting to a broker that is down.

Jitter matters at scale: after a broker restart, a province of gateways must not reconnect in lockstep.
A few quick retries first catch a broker restart (seconds) without waiting; then the wait doubles up to a
cap, which bounds how long a gateway stays away once the broker is back (on average under half the cap).
"""

from __future__ import annotations

import random


class Backoff:
    """Delays drawn uniformly from the upper half of a ceiling: `quick` times `first_s`, then doubling from
    `first_s` up to `max_s`."""

    def __init__(self, *, first_s: float = 1.0, max_s: float = 60.0, quick: int = 0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got first_s={first_s}, max_s={max_s}")
        if quick < 0:
            raise ValueError(f"quick must be 0 or more, got {quick}")
        self.first_s = first_s
        self.max_s = max_s
        self.quick = quick
        self._ceiling = first_s
        self._quick_left = quick

    def next_delay(self) -> float:
        """The wait before the next attempt; after the quick ones, each call doubles the ceiling for the
        one after."""
        ceiling = self._ceiling
        if self._quick_left:
            self._quick_left -= 1
        else:
            self._ceiling = min(self._ceiling * 2, self.max_s)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """After a success, start again from `first_s`, quick retries included."""
        self._ceiling = self.first_s
        self._quick_left = self.quick
