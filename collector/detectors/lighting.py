"""R6, street lighting: lamps burning outside their window, or dark inside it, for more than 15 minutes.

The window is the site's (fixed 19:00-04:30, or sunset to sunrise at its coordinates); the tolerance
absorbs timers that drift a few minutes and photocells following the clouds.
"""

from __future__ import annotations

from collector.calendars import SiteCalendar, local_day
from collector.detectors.common import Context, Step, episodes
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series


def in_window(calendar: SiteCalendar, ts: int) -> bool:
    day = local_day(ts)
    return any(on <= ts < off for on, off in (calendar.dark(day - 1), calendar.dark(day)))


def detect(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.lighting
    lit_kw = settings.lit_share * ctx.config.rated_kw
    ts, kw = series.usable
    silence = 3 * series.poll_ms
    seen: list[tuple[int, bool | None, bool]] = []
    prev = None
    for t, w in zip(ts, kw, strict=True):
        if prev is not None and t - prev > silence:
            seen.append((prev + series.poll_ms, None, False))
        seen.append((t, w > lit_kw, in_window(ctx.calendar, t)))
        prev = t
    open_ms = round(settings.tolerance_min * 60_000) + 1
    findings = []
    for rule, wrong in (("on_by_day", (True, False)), ("dark_at_night", (False, True))):
        steps = [
            (t, Step.UNKNOWN if lit is None else Step.BAD if (lit, window) == wrong else Step.GOOD)
            for t, lit, window in seen
        ]
        for ep in episodes(steps, series.poll_ms, open_ms, 2 * series.poll_ms):
            hours = series.poll_ms / 3_600_000
            waste = (
                [
                    (t, w * hours)
                    for t, w in zip(ts, kw, strict=True)
                    if ep.start <= t < (ep.end or ts[-1] + 1)
                ]
                if rule == "on_by_day"
                else []
            )
            findings.append(ctx.finding(Detector.LIGHTING, rule, ep, waste))
    return findings
