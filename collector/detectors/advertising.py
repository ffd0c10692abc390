"""R7, advertising lighting: while lit in the evening peak band it must run at most half its power.

The reference is the sign's nameplate (rated) kW; the band comes from the site's TOU calendar of the
day, so the 2026 change moves the rule with it and Sunday (no peak) is never judged.
"""

from __future__ import annotations

import math

import numpy as np

from collector.detectors.common import STEP_CODE, Context, Step, episodes_of
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from kilowatch.calendars import BANDS, Band
from kilowatch.timebase import DAY_MS, OFFSET_MS, SLOT_HOURS, SLOT_MS, SLOTS_PER_DAY


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.advertising
    rated = ctx.config.rated_kw
    intervals = series.intervals
    kw, starts = intervals.mean_kw, intervals.starts
    evening = (starts + OFFSET_MS) % DAY_MS // SLOT_MS >= SLOTS_PER_DAY // 2
    peak = ctx.calendar.band_codes(intervals.start_ms, kw.size) == BANDS.index(Band.PEAK)
    known = evening & peak & ~np.isnan(kw)
    bad = known & (kw > settings.lit_share * rated) & (kw / rated > settings.max_ratio)
    codes = np.full(kw.size, STEP_CODE[Step.UNKNOWN], dtype=np.int8)
    codes[known] = STEP_CODE[Step.GOOD]
    codes[bad] = STEP_CODE[Step.BAD]
    findings = []
    for ep in episodes_of(starts, codes, SLOT_MS, settings.min_intervals * SLOT_MS, SLOT_MS):
        lit = [
            (intervals.ts(i), w)
            for i, w in enumerate(kw[ep.first : ep.last].tolist(), ep.first)
            if not math.isnan(w)
        ]
        waste = [(ts, (w - settings.max_ratio * rated) * SLOT_HOURS) for ts, w in lit]
        kws = [w for _, w in lit]
        findings.append(ctx.finding(Detector.ADVERTISING, "R7", ep, waste, sum(kws) / len(kws) / rated))
    return findings
