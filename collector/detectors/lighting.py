"""R6, street lighting: lamps burning outside their window, or dark inside it, for more than 15 minutes.

The window is the site's (fixed 19:00-04:30, or sunset to sunrise at its coordinates); the tolerance
absorbs timers that drift a few minutes and photocells following the clouds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from collector.calendars import SiteCalendar
from collector.detectors.common import STEP_CODE, Context, Step, episodes_of
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from kilowatch.timebase import DAY_MS, OFFSET_MS


def in_window(calendar: SiteCalendar, ts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Whether each event time is inside the window of the night ending or the night starting that
    local day."""
    if not ts.size:
        return np.zeros(0, dtype=np.bool_)
    day = (ts + OFFSET_MS) // DAY_MS
    first = int(day.min()) - 1
    nights = np.array([calendar.dark(d) for d in range(first, int(day.max()) + 1)], dtype=np.int64)
    on, off = nights[:, 0], nights[:, 1]
    tonight = day - first
    last_night = tonight - 1
    return ((on[last_night] <= ts) & (ts < off[last_night])) | ((on[tonight] <= ts) & (ts < off[tonight]))


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.lighting
    lit_kw = settings.lit_share * ctx.config.rated_kw
    ts, kw = series.usable_arrays
    # After a silence, an UNKNOWN step one poll after the last reading before it.
    after_silence = np.flatnonzero(np.diff(ts) > 3 * series.poll_ms) + 1
    step_ts = np.insert(ts, after_silence, ts[after_silence - 1] + series.poll_ms)
    lit, window = kw > lit_kw, in_window(ctx.calendar, ts)
    open_ms = round(settings.tolerance_min * 60_000) + 1
    hours = series.poll_ms / 3_600_000
    findings = []
    for rule, bad in (("on_by_day", lit & ~window), ("dark_at_night", ~lit & window)):
        codes = np.where(bad, STEP_CODE[Step.BAD], STEP_CODE[Step.GOOD]).astype(np.int8)
        steps = np.insert(codes, after_silence, STEP_CODE[Step.UNKNOWN])
        for ep in episodes_of(step_ts, steps, series.poll_ms, open_ms, 2 * series.poll_ms):
            waste = []
            if rule == "on_by_day":
                lo, hi = np.searchsorted(ts, [ep.start, ep.end or int(ts[-1]) + 1]).tolist()
                waste = [(t, w * hours) for t, w in zip(ts[lo:hi].tolist(), kw[lo:hi].tolist(), strict=True)]
            findings.append(ctx.finding(Detector.LIGHTING, rule, ep, waste))
    return findings
