"""R9, the peak bands: a circuit using clearly more than on comparable days, and a large machine LOADED.

Overuse compares each peak-band interval with the same interval on the last four same weekdays (or,
early in the data, the last four days that had a peak band) and takes their *highest* value as the
reference: a late evening or a hot day seen recently is then normal, and only load beyond anything
recent, by a ratio and by a share of the rated kW, counts.
"""

from __future__ import annotations

from collections.abc import Iterator

from collector.calendars import DAY_MS, OFFSET_MS, SLOT_MS, Band, local_day
from collector.detectors.common import Context, Step, episodes
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from collector.detectors.states import State, states

HOURS = SLOT_MS / 3_600_000
_SAME_WEEKDAY_WEEKS = 5
_RECENT_DAYS = 10


def _slot(ts: int) -> tuple[int, int]:
    return local_day(ts), (ts + OFFSET_MS) % DAY_MS // SLOT_MS


def detect(ctx: Context, series: Series) -> list[Finding]:
    findings = _overuse(ctx, series)
    if ctx.config.large:
        findings += _large_machine(ctx, series)
    return findings


def _reference(ctx: Context, kw: dict[tuple[int, int], float], day: int, slot: int) -> float | None:
    n = ctx.thresholds.peak.reference_days
    same = [kw[(day - 7 * k, slot)] for k in range(1, _SAME_WEEKDAY_WEEKS + 1) if (day - 7 * k, slot) in kw][
        :n
    ]
    if len(same) < 2:
        same = [
            kw[(d, slot)]
            for d in range(day - 1, day - _RECENT_DAYS, -1)
            if (d, slot) in kw and ctx.calendar.bands(d)[slot] is Band.PEAK
        ][:n]
    return max(same) if len(same) >= 2 else None


def _overuse(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.peak
    intervals = series.intervals
    kw = {_slot(intervals.ts(i)): w for i, w in enumerate(intervals.kw) if w is not None}
    refs: list[float | None] = []
    for i, w in enumerate(intervals.kw):
        day, slot = _slot(intervals.ts(i))
        peak = ctx.calendar.bands(day)[slot] is Band.PEAK
        refs.append(_reference(ctx, kw, day, slot) if peak and w is not None else None)
    min_excess = settings.min_excess_share * ctx.config.rated_kw

    def steps() -> Iterator[tuple[int, Step]]:
        for i, w in enumerate(intervals.kw):
            ref = refs[i]
            if w is None or ref is None:
                yield intervals.ts(i), Step.UNKNOWN
            elif w > settings.ratio * ref and w - ref > min_excess:
                yield intervals.ts(i), Step.BAD
            else:
                yield intervals.ts(i), Step.GOOD

    findings = []
    for ep in episodes(steps(), SLOT_MS, settings.min_intervals * SLOT_MS, SLOT_MS):
        waste = [
            (intervals.ts(i), (w - r) * HOURS)
            for i in range(ep.first, ep.last)
            if (w := intervals.kw[i]) is not None and (r := refs[i]) is not None and w > r
        ]
        excess = sum(x for _, x in waste) / HOURS / max(1, ep.last - ep.first)
        findings.append(ctx.finding(Detector.PEAK, "overuse", ep, waste, excess))
    return findings


def _large_machine(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.peak
    kw_at = dict(zip(*series.usable, strict=True))
    steps = []
    for t, state in states(series, ctx.thresholds.idle, ctx.config.rated_kw):
        if state is State.UNKNOWN or ctx.calendar.band_at(t) is not Band.PEAK:
            steps.append((t, Step.UNKNOWN))
        else:
            steps.append((t, Step.BAD if state is State.LOADED else Step.GOOD))
    open_ms = round(settings.large_machine_min * 60_000)
    hours = series.poll_ms / 3_600_000
    findings = []
    for ep in episodes(steps, series.poll_ms, open_ms, 0):
        waste = [(t, kw_at.get(t, 0.0) * hours) for t, _ in steps[ep.first : ep.last]]
        findings.append(ctx.finding(Detector.PEAK, "large_machine_in_peak", ep, waste, kw_at.get(ep.start)))
    return findings
