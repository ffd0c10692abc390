"""R10, idle equipment: a machine running without load (IDLE) for 20 min in a shift or 10 min outside one.

Short idle spells between jobs are normal; so the rule counts only a continuous IDLE state (after the
state machine's hysteresis and dwell), and the state thresholds scale with the machine's rated kW, so a
level drifting over weeks stays LOADED.
"""

from __future__ import annotations

from collector.detectors.common import Context, Episode, episodes_of
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from collector.detectors.states import State, state_steps


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.idle
    ts, steps, kw = state_steps(series, settings, ctx.config.rated_kw, State.IDLE)
    outside_ms = round(settings.outside_shift_min * 60_000)
    in_shift_ms = round(settings.in_shift_min * 60_000)
    findings = []
    for ep in episodes_of(ts, steps, series.poll_ms, outside_ms, 0):
        if ctx.calendar.in_shift(ep.start):
            detected = ep.start + in_shift_ms
            if int(ts[ep.last - 1]) + series.poll_ms < detected:
                continue
            ep = Episode(ep.start, detected, ep.end, ep.first, ep.last)
        spell = zip(ts[ep.first : ep.last].tolist(), kw[ep.first : ep.last].tolist(), strict=True)
        waste = [(t, w * series.poll_ms / 3_600_000) for t, w in spell]
        findings.append(ctx.finding(Detector.IDLE, "R10", ep, waste, float(kw[ep.first])))
    return findings
