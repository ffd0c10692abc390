"""Re-dating a reading: from its gateway's monotonic clock onto UTC, as agent and collector both do.

A gateway without a trustworthy clock stamps readings anyway and keeps `mono_ms` (CLOCK_BOOTTIME, never
stepped). Once its clock synchronises it knows `offset_ms` = UTC minus boottime for that boot (the clock
anchor), and a reading's true time is `mono_ms + offset_ms`. The agent re-dates what it still spools;
the collector re-dates what it holds in quarantine and readings of a clock that stepped away.
"""

from __future__ import annotations

from kilowatch.mqtt_contract import ClockState, Reading


def redate(reading: Reading, offset_ms: int) -> Reading:
    """The reading at the time its monotonic clock says, on the anchor's UTC scale, marked corrected."""
    if reading.mono_ms is None:
        raise ValueError(f"reading of {reading.meter} at {reading.ts} has no monotonic time to re-date by")
    return reading.model_copy(update={"ts": reading.mono_ms + offset_ms, "clock": ClockState.CORRECTED})
