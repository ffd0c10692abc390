"""Data quality: a meter silent for more than three polls, frozen registers, an energy counter going
backwards (reset or replaced meter), and spans a gateway's clock could not be trusted.

These findings explain the gaps that suppress the other detectors, so a silence caused by an untrusted
clock or frozen registers is reported once, as that, not again as a silent meter. A counter step spans
the last reading before it to the end of the first after. A frozen stretch that reaches the last reading
judged stays open: the next pass says whether it goes on.
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
    explained = [*series.untrusted, *((a, b + poll) for a, b, _ in frozen)]
    for a, b in series.silences(settings.silent_polls):
        if any(u0 <= b and a <= u1 for u0, u1 in explained):
            continue
        ongoing = b >= series.end_ms
        episode = Episode(a, a + settings.silent_polls * poll, None if ongoing else b, 0, 0)
        findings.append(ctx.finding(Detector.DATA_QUALITY, "no_data", episode))
    last = int(series.ts[-1]) if series.ts.size else 0
    for a, b, certain in frozen:
        # Frozen up to the last reading judged, with no silence after it: it may well go on.
        ongoing = b == last and b + (settings.silent_polls + 1) * poll >= series.end_ms
        episode = Episode(a, certain, None if ongoing else b + poll, 0, 0)
        findings.append(ctx.finding(Detector.DATA_QUALITY, "frozen", episode))
    energy = series.energy
    backwards = np.flatnonzero(went_backwards(energy[:-1], energy[1:]))  # False where NaN
    for t0, t1 in zip(series.ts[backwards].tolist(), series.ts[backwards + 1].tolist(), strict=True):
        # From the last reading before the step to the end of the first after it: the span it is in.
        episode = Episode(t0, t1 + poll, t1 + poll, 0, 0)
        findings.append(ctx.finding(Detector.DATA_QUALITY, "counter_reset", episode))
    return findings


def untrusted_clock(ctx: Context, spans: list[tuple[int, int]]) -> list[Finding]:
    """One finding per span a gateway's clock jumped away and back (`ctx.meter` names the gateway)."""
    return [ctx.finding(Detector.DATA_QUALITY, "untrusted_clock", Episode(a, b, b, 0, 0)) for a, b in spans]
