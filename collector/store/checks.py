"""What the ledger checks before it believes a reading: the time window, the meter's owner, how fast its
counters can rise. Plain values: the service builds them from ``collector.yaml`` and the sites file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kilowatch.mqtt_contract import TimeWindow

DEFAULT_MAX_KW = 10_000.0
"""A meter's maximum power when the sites file does not rate it: a 10 MW connection, more than any site
of ours; generous, so that only garbage (a counter jumping by millions of kWh) is refused."""
RATED_HEADROOM = 3.0
"""A rated meter's maximum power is this many times the larger of its rated kW and demand limit (motor
starts, overloads, a rating written down too low)."""


@dataclass(frozen=True, kw_only=True)
class IngestChecks:
    """Plausibility and identity rules the ledger applies to every reading.

    Attributes:
        window: Event times outside it (at the time the message is received) are quarantined.
        max_kw: Each rated meter's maximum power, kW; counters rising faster are refused as bad values.
        default_max_kw: The maximum power of a meter not in `max_kw`.
        provisioned: meter -> (site, gateway) it belongs to; gateway None: the first gateway of that site
            it is seen from. Meters not named here belong to the first gateway they are seen from.
    """

    window: TimeWindow = field(default_factory=TimeWindow)
    max_kw: Mapping[str, float] = field(default_factory=dict)
    default_max_kw: float = DEFAULT_MAX_KW
    provisioned: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)

    def meter_max_kw(self, meter: str) -> float:
        return self.max_kw.get(meter, self.default_max_kw)
