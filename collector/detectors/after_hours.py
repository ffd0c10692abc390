"""R4, after-hours load: a circuit drawing well above its own base load while the site is unoccupied.

Adaptive by construction: base load B and near-peak load are quantiles of the meter's own trailing 28
days (recomputed each local midnight, hourly while fewer than a day of history exists), so hot spells and
drifting equipment move the thresholds with them. Early arrivals, the lunch break and whatever a site
declares as permitted (overtime, Saturday mornings) are neither occupied nor after hours; closed days
(Sundays, public holidays) are after hours all day.

Overtime is told from waste by its shape, not by a blanket evening window: an evening that goes on from
the end of occupied hours, stays up at most an hour (the end of the day wanders) and then keeps ramping
down (each half hour drawing less above B than the one before, as people leave) is overtime or a late
departure; once the load stops falling, flat or cycling, it is load left running.
"""

from __future__ import annotations

from collections.abc import Iterator

from collector.detectors.common import Context, Step, episodes, quantile
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from kilowatch.timebase import DAY_MS, SLOT_MS, local_day, slot_of_day

_MIN_HISTORY = 16
"""Unoccupied intervals needed before B means anything (four hours)."""
_HALF_HOUR = 2
"""Intervals in half an hour: an evening's ramp is judged on half-hour means, half an hour apart, which
a cycling load (a compressor switching every few minutes) does not fool."""
_RAMP = 0.92
"""An evening ramps down while its last half hour draws less than this share of the excess over B of
the half hour before."""
_LATE = 4
"""Intervals after occupied hours end in which an evening may still stay up: the end of the day wanders
by an hour."""


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.after_hours
    intervals = series.intervals
    calendar = ctx.calendar
    base: list[float | None] = []
    peak: list[float | None] = []
    unoccupied: list[bool] = []
    closed_day: list[bool] = []  # nobody there all day: nothing to ramp down from
    history: list[tuple[int, float, bool]] = []  # (ts, kW, unoccupied) of past valid intervals
    baseline: tuple[float, float] | None = None
    for i, kw in enumerate(intervals.kw):
        ts = intervals.ts(i)
        day, slot = local_day(ts), slot_of_day(ts)
        closed = slot not in calendar.occupied_slots(day) and slot not in calendar.permitted_slots(day)
        unoccupied.append(closed)
        closed_day.append(not calendar.occupied_slots(day))
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

    def ramping(i: int, b: float) -> bool:
        """Whether the half hour up to interval `i` drew less above `b` than the half hour before it."""
        if i < 2 * _HALF_HOUR - 1:
            return False
        recent = intervals.kw[i - 2 * _HALF_HOUR + 1 : i + 1]
        if any(w is None for w in recent):
            return False
        before, last = (sum(w for w in recent[k : k + _HALF_HOUR] if w is not None) for k in (0, _HALF_HOUR))
        return last / _HALF_HOUR - b < _RAMP * (before / _HALF_HOUR - b)

    def steps() -> Iterator[tuple[int, Step]]:
        evening: int | None = None  # intervals since occupied hours ended while the load goes on
        for i, kw in enumerate(intervals.kw):
            b, p = base[i], peak[i]
            if kw is None or b is None or p is None or not unoccupied[i]:
                evening = 0 if kw is not None and not unoccupied[i] and not closed_day[i] else None
                yield intervals.ts(i), Step.UNKNOWN
                continue
            evening = evening + 1 if evening is not None and kw >= settings.clear_ratio * b else None
            if kw > max(settings.open_ratio * b, b + settings.peak_share * (p - b)):
                overtime = evening is not None and (evening <= _LATE or ramping(i, b))
                yield intervals.ts(i), Step.HOLD if overtime else Step.BAD
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
