"""Which detectors judge which meter, in one place, and running them over a meter's series."""

from __future__ import annotations

from collections.abc import Callable

from collector.detectors import advertising, after_hours, data_quality, idle, lighting, peak
from collector.detectors.common import Context, one_per_episode
from collector.detectors.config import Role
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series

DetectFn = Callable[[Context, Series], list[Finding]]

_MODULES: dict[Detector, DetectFn] = {
    Detector.AFTER_HOURS: after_hours.detect,
    Detector.IDLE: idle.detect,
    Detector.PEAK: peak.detect,
    Detector.LIGHTING: lighting.detect,
    Detector.ADVERTISING: advertising.detect,
    Detector.DATA_QUALITY: data_quality.detect,
}

DETECTORS_BY_ROLE: dict[Role, tuple[Detector, ...]] = {
    Role.OFFICE_MAIN: (Detector.AFTER_HOURS, Detector.PEAK, Detector.DATA_QUALITY),
    Role.SUB_METER: (Detector.AFTER_HOURS, Detector.PEAK, Detector.DATA_QUALITY),
    Role.MACHINE: (Detector.IDLE, Detector.PEAK, Detector.DATA_QUALITY),
    Role.LIGHTING_CABINET: (Detector.LIGHTING, Detector.DATA_QUALITY),
    Role.ADVERTISING: (Detector.ADVERTISING, Detector.DATA_QUALITY),
}
"""A lighting cabinet is not judged on office hours, nor a sign on idling: each role its own rules."""


def detect_meter(ctx: Context, series: Series) -> list[Finding]:
    """Every finding of every detector that applies to the meter's role, one per episode (see
    :func:`one_per_episode`), in event-time order."""
    findings = [f for d in DETECTORS_BY_ROLE[ctx.config.role] for f in _MODULES[d](ctx, series)]
    return sorted(
        one_per_episode(ctx, findings, series.end_ms), key=lambda f: (f.start_ms, f.detector, f.rule)
    )
