"""R9, the peak bands: a circuit using clearly more than on comparable days, and a large machine LOADED.

Overuse compares each peak-band interval with the *median* of the same interval on the last four same
weekdays (or, lacking two, recent days of the same kind, open or closed), scaled up when the same day's
hour before the band was already higher than usual (a hot day). Outside occupied hours (the evening band
of an office) an episode must also start above what the circuit drew just before the band: late
departures and permitted overtime only ramp down from it, extra load adds to it. A closed day without
comparable days is judged against its hour before the band; an open one is not judged. The excess must
pass a ratio and a share of the larger of the rated kW and the circuit's usual daily high (a main meter
whose rated kW undersells what it carries), for an hour."""

from __future__ import annotations

import statistics

from collector.calendars import DAY_MS, OFFSET_MS, SLOT_MS, Band, local_day
from collector.detectors.common import Context, Step, episodes
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from collector.detectors.states import State, states

HOURS = SLOT_MS / 3_600_000
_SAME_WEEKDAY_WEEKS = 5
_RECENT_DAYS = 10
_BEFORE_SLOTS = 4
"""The hour before a peak band: what the circuit drew that day just before it."""


def _slot(ts: int) -> tuple[int, int]:
    return local_day(ts), (ts + OFFSET_MS) % DAY_MS // SLOT_MS


def detect(ctx: Context, series: Series) -> list[Finding]:
    findings = _overuse(ctx, series)
    if ctx.config.large:
        findings += _large_machine(ctx, series)
    return findings


def _comparable_days(ctx: Context, kw: dict[tuple[int, int], float], day: int, slot: int) -> list[int]:
    """The slot on the last same weekdays or, lacking two of them, on recent days of the same kind (open
    or closed by the site's calendar) that had a peak band there."""
    n = ctx.thresholds.peak.reference_days
    weeks = range(1, _SAME_WEEKDAY_WEEKS + 1)
    same = [day - 7 * k for k in weeks if (day - 7 * k, slot) in kw][:n]
    if len(same) >= 2:
        return same
    open_today = bool(ctx.calendar.occupied_slots(day))
    return [
        d
        for d in range(day - 1, day - _RECENT_DAYS, -1)
        if (d, slot) in kw
        and ctx.calendar.bands(d)[slot] is Band.PEAK
        and bool(ctx.calendar.occupied_slots(d)) == open_today
    ][:n]


def _before_band(
    ctx: Context, kw: dict[tuple[int, int], float], day: int, slot: int
) -> tuple[float, float] | None:
    """(mean kW of the hour before the peak band that `slot` belongs to, kW of its last quarter hour with
    data) on the same day."""
    bands = ctx.calendar.bands(day)
    first = slot
    while first > 0 and bands[first - 1] is Band.PEAK:
        first -= 1
    before = [kw[(day, s)] for s in range(max(0, first - _BEFORE_SLOTS), first) if (day, s) in kw]
    return (statistics.fmean(before), before[-1]) if len(before) >= _BEFORE_SLOTS // 2 else None


def _overuse(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.peak
    intervals = series.intervals
    kw = {_slot(intervals.ts(i)): w for i, w in enumerate(intervals.kw) if w is not None}
    by_day: dict[int, list[float]] = {}
    for (d, _), load in kw.items():
        by_day.setdefault(d, []).append(load)
    highs = {d: max(loads) for d, loads in by_day.items()}
    min_excess: dict[int, float] = {}

    def above(w: float, ref: float, day: int) -> bool:
        if day not in min_excess:
            week = [highs[d] for d in range(day - 7, day) if d in highs]
            typical = max(ctx.config.rated_kw, statistics.median(week) if week else 0.0)
            min_excess[day] = settings.min_excess_share * typical
        return w > settings.ratio * ref and w - ref > min_excess[day]

    refs: list[float | None] = []
    steps: list[tuple[int, Step]] = []
    previous_bad = False
    for i, w in enumerate(intervals.kw):
        day, slot = _slot(intervals.ts(i))
        ref = None
        bad = False
        if w is not None and ctx.calendar.bands(day)[slot] is Band.PEAK:
            before = _before_band(ctx, kw, day, slot)
            days = _comparable_days(ctx, kw, day, slot)
            open_slots = ctx.calendar.occupied_slots(day)
            occupied = slot in open_slots
            if len(days) >= 2:
                ref = statistics.median(kw[(d, slot)] for d in days)
                earlier = [b[0] for d in days if (b := _before_band(ctx, kw, d, slot)) is not None]
                if before is not None and earlier:
                    ref *= max(1.0, before[0] / max(statistics.median(earlier), 1e-9))
            elif not open_slots and before is not None:  # a closed day: the hour before is its base load
                ref = before[0]
            if ref is not None:
                rises = occupied or (before is not None and w > settings.ratio * before[1])
                bad = above(w, ref, day) and (rises or previous_bad)
        refs.append(ref)
        steps.append((intervals.ts(i), Step.UNKNOWN if ref is None else Step.BAD if bad else Step.GOOD))
        previous_bad = bad

    findings = []
    for ep in episodes(steps, SLOT_MS, settings.min_intervals * SLOT_MS, SLOT_MS):
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
