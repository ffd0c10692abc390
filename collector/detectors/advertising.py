"""R7, advertising lighting: while lit in the evening peak band it must run at most half its power.

The reference is the sign's nameplate (rated) kW; the band comes from the site's TOU calendar of the
day, so the 2026 change moves the rule with it and Sunday (no peak) is never judged.
"""

from __future__ import annotations

from collections.abc import Iterator

from collector.calendars import DAY_MS, OFFSET_MS, SLOT_MS, SLOTS_PER_DAY, Band, local_day
from collector.detectors.common import Context, Step, episodes
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series

HOURS = SLOT_MS / 3_600_000


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.advertising
    rated = ctx.config.rated_kw
    intervals = series.intervals

    def evening_peak(ts: int) -> bool:
        slot = (ts + OFFSET_MS) % DAY_MS // SLOT_MS
        return slot >= SLOTS_PER_DAY // 2 and ctx.calendar.bands(local_day(ts))[slot] is Band.PEAK

    def steps() -> Iterator[tuple[int, Step]]:
        for i, kw in enumerate(intervals.kw):
            ts = intervals.ts(i)
            if kw is None or not evening_peak(ts):
                yield ts, Step.UNKNOWN
            elif kw > settings.lit_share * rated and kw / rated > settings.max_ratio:
                yield ts, Step.BAD
            else:
                yield ts, Step.GOOD

    findings = []
    for ep in episodes(steps(), SLOT_MS, settings.min_intervals * SLOT_MS, SLOT_MS):
        kws = [w for i in range(ep.first, ep.last) if (w := intervals.kw[i]) is not None]
        waste = [
            (intervals.ts(i), (w - settings.max_ratio * rated) * HOURS)
            for i in range(ep.first, ep.last)
            if (w := intervals.kw[i]) is not None
        ]
        findings.append(ctx.finding(Detector.ADVERTISING, "R7", ep, waste, sum(kws) / len(kws) / rated))
    return findings
