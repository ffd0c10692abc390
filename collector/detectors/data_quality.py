"""Data quality: a meter silent for more than three polls, frozen registers, an energy counter going
backwards (reset or replaced meter), and spans a gateway's clock could not be trusted.

These findings explain the gaps that suppress the other detectors, so a silence caused by an untrusted
clock or frozen registers is reported once, as that, not again as a silent meter. A counter step is
dated between the last reading before it and the first after.
"""

from __future__ import annotations

import numpy as np

from collector.detectors.common import Context, Episode
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from kilowatch.counters import went_backwards


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.data_quality
    poll = series.poll_ms
    findings = []
    frozen = series.frozen()
    explained = [*series.untrusted, *((a, b + poll) for a, b in frozen)]
    for a, b in series.silences(settings.silent_polls):
        if any(u0 <= b and a <= u1 for u0, u1 in explained):
            continue
        ongoing = b >= series.end_ms
        episode = Episode(a, a + settings.silent_polls * poll, None if ongoing else b, 0, 0)
        findings.append(ctx.finding(Detector.DATA_QUALITY, "no_data", episode))
    for a, b in frozen:
        episode = Episode(a, a + (settings.frozen_polls - 1) * poll, b + poll, 0, 0)
        findings.append(ctx.finding(Detector.DATA_QUALITY, "frozen", episode))
    energy = series.energy
    backwards = np.flatnonzero(went_backwards(energy[:-1], energy[1:]))  # False where NaN
    for t0, t1 in zip(series.ts[backwards].tolist(), series.ts[backwards + 1].tolist(), strict=True):
        findings.append(ctx.finding(Detector.DATA_QUALITY, "counter_reset", Episode(t0, t1, t1, 0, 0)))
    return findings


def untrusted_clock(ctx: Context, spans: list[tuple[int, int]]) -> list[Finding]:
    """One finding per span a gateway's clock jumped away and back (`ctx.meter` names the gateway)."""
    return [ctx.finding(Detector.DATA_QUALITY, "untrusted_clock", Episode(a, b, b, 0, 0)) for a, b in spans]
