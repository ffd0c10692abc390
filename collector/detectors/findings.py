"""What a detector says: one :class:`Finding` per condition it sees, in event time.

Defined once: detectors produce findings, the alert store turns them into alerts with a lifecycle (one
open alert per site, meter, detector and rule), and the evaluation compares them with the simulator's
ground-truth labels.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Detector(StrEnum):
    AFTER_HOURS = "after_hours"
    """R4: load left on outside office hours and on closed days."""
    IDLE = "idle"
    """R10: equipment running without load."""
    PEAK = "peak"
    """R9: overuse in the peak band, large machines loaded in it."""
    LIGHTING = "lighting"
    """R6: street lights burning by day or dark at night."""
    ADVERTISING = "advertising"
    """R7: advertising lighting not cut in the evening peak."""
    DATA_QUALITY = "data_quality"
    """Silent meter, gateway offline, counter reset, untrusted clock."""


class Finding(BaseModel):
    """A condition a detector saw on one meter over [start_ms, end_ms) (end None: still going)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str
    meter: str
    detector: Detector
    rule: str = Field(description="Which rule of the detector, e.g. 'R4' or 'large_machine_in_peak'")
    start_ms: int = Field(ge=0, description="Event time the condition began, UTC ms")
    end_ms: int | None = Field(None, ge=0, description="Event time it cleared, UTC ms; None while it lasts")
    detected_at: int = Field(ge=0, description="Event time at which the detector could first say so, UTC ms")
    wasted_kwh: float = Field(0.0, ge=0, description="Energy the condition wasted so far, kWh")
    cost_vnd: float = Field(0.0, ge=0, description="What the wasted energy cost at the site's tariff, VND")
    magnitude: float | None = Field(None, description="The rule's measure, e.g. kW above base load")
    message_en: str
    message_vi: str
