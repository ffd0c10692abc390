"""R10, idle equipment: a machine running without load (IDLE) for 20 min in a shift or 10 min outside one.

Short idle spells between jobs are normal; so the rule counts only a continuous IDLE state (after the
state machine's hysteresis and dwell), and the state thresholds scale with the machine's rated kW, so a
level drifting over weeks stays LOADED.

A spell that straddles a shift boundary is judged by the time it spent idle on each side, not by where
it began: each idle minute in a shift uses 1/20 of the allowance, each one outside 1/10, and the alert
comes once the allowance is used up (4 min before a shift ends and 14 after it alert; 18 min in a shift
do not).
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
    for ep in episodes_of(ts, steps, series.poll_ms, min(outside_ms, in_shift_ms), 0):
        detected = _allowance_used(
            ctx, ts[ep.first : ep.last].tolist(), series.poll_ms, in_shift_ms, outside_ms
        )
        if detected is None:
            continue
        ep = Episode(ep.start, detected, ep.end, ep.first, ep.last)
        spell = zip(ts[ep.first : ep.last].tolist(), kw[ep.first : ep.last].tolist(), strict=True)
        waste = [(t, w * series.poll_ms / 3_600_000) for t, w in spell]
        findings.append(ctx.finding(Detector.IDLE, "R10", ep, waste, float(kw[ep.first])))
    return findings


def _allowance_used(
    ctx: Context, spell: list[int], poll_ms: int, in_shift_ms: int, outside_ms: int
) -> int | None:
    """The event time at which the idle readings `spell` (each standing for a poll) have used the whole
    allowance, in-shift time counted against `in_shift_ms` and the rest against `outside_ms`; None if
    they never do."""
    used = 0.0
    for t in spell:
        used += poll_ms / (in_shift_ms if ctx.calendar.in_shift(t) else outside_ms)
        if used >= 1 - 1e-9:
            return t + poll_ms
    return None
