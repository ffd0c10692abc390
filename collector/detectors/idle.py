"""R10, idle equipment: a machine running without load (IDLE) for 20 min in a shift or 10 min outside one.

Short idle spells between jobs are normal; so the rule counts only a continuous IDLE state (after the
state machine's hysteresis and dwell), and the state thresholds scale with the machine's rated kW, so a
level drifting over weeks stays LOADED.
"""

from __future__ import annotations

from collector.detectors.common import Context, Episode, Step, episodes
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from collector.detectors.states import State, states


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.idle
    seen = list(states(series, settings, ctx.config.rated_kw))
    steps = [
        (t, Step.UNKNOWN if s is State.UNKNOWN else Step.BAD if s is State.IDLE else Step.GOOD)
        for t, s in seen
    ]
    outside_ms = round(settings.outside_shift_min * 60_000)
    in_shift_ms = round(settings.in_shift_min * 60_000)
    kw_at = dict(zip(*series.usable, strict=True))
    findings = []
    for ep in episodes(steps, series.poll_ms, outside_ms, 0):
        if ctx.calendar.in_shift(ep.start):
            detected = ep.start + in_shift_ms
            if steps[ep.last - 1][0] + series.poll_ms < detected:
                continue
            ep = Episode(ep.start, detected, ep.end, ep.first, ep.last)
        waste = [(t, kw_at.get(t, 0.0) * series.poll_ms / 3_600_000) for t, _ in steps[ep.first : ep.last]]
        findings.append(ctx.finding(Detector.IDLE, "R10", ep, waste, kw_at.get(ep.start)))
    return findings
