"""R4, after-hours load: a circuit drawing well above its own base load while the site is unoccupied.

Adaptive by construction: base load B and near-peak load are quantiles of the meter's own trailing 28
days (recomputed each local midnight, hourly while fewer than a day of history exists), so hot spells and
drifting equipment move the thresholds with them. Permitted overtime and worked Saturday mornings are
neither occupied nor after hours; closed days (Sundays, public holidays) are after hours all day.
"""

from __future__ import annotations

from collections.abc import Iterator

from collector.detectors.common import Context, Step, episodes, quantile
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from kilowatch.timebase import DAY_MS, SLOT_MS, local_day, slot_of_day

_MIN_HISTORY = 16
"""Unoccupied intervals needed before B means anything (four hours)."""


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.after_hours
    intervals = series.intervals
    calendar = ctx.calendar
    base: list[float | None] = []
    peak: list[float | None] = []
    unoccupied: list[bool] = []
    history: list[tuple[int, float, bool]] = []  # (ts, kW, unoccupied) of past valid intervals
    baseline: tuple[float, float] | None = None
    for i, kw in enumerate(intervals.kw):
        ts = intervals.ts(i)
        day, slot = local_day(ts), slot_of_day(ts)
        closed = slot not in calendar.occupied_slots(day) and slot not in calendar.permitted_slots(day)
        unoccupied.append(closed)
        if slot == 0 or (baseline is None and slot % 4 == 0):
            cutoff = ts - settings.trailing_days * DAY_MS
            history = [h for h in history if h[0] >= cutoff]
            off = [w for _, w, u in history if u]
            if len(off) >= _MIN_HISTORY:
                b0 = (
                    settings.essential_kw
                    if settings.essential_kw is not None
                    else quantile(off, settings.base_quantile)
                )
                baseline = (b0, quantile([w for _, w, _ in history], settings.peak_quantile))
        base.append(baseline[0] if baseline else None)
        peak.append(baseline[1] if baseline else None)
        if kw is not None:
            history.append((ts, kw, closed))

    def steps() -> Iterator[tuple[int, Step]]:
        for i, kw in enumerate(intervals.kw):
            b, p = base[i], peak[i]
            if kw is None or b is None or p is None or not unoccupied[i]:
                yield intervals.ts(i), Step.UNKNOWN
            elif kw > max(settings.open_ratio * b, b + settings.peak_share * (p - b)):
                yield intervals.ts(i), Step.BAD
            elif kw < settings.clear_ratio * b:
                yield intervals.ts(i), Step.GOOD
            else:
                yield intervals.ts(i), Step.HOLD

    findings = []
    for ep in episodes(
        steps(), SLOT_MS, settings.open_intervals * SLOT_MS, settings.clear_intervals * SLOT_MS
    ):
        findings.append(ctx.excess_finding(Detector.AFTER_HOURS, "R4", ep, intervals, base))
    return findings
