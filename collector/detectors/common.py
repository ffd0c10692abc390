"""What every detector shares: the meter's context, episode tracking with open/clear rules, and turning
an episode into a :class:`Finding` with its wasted energy, its cost and its messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from collector.calendars import SiteCalendar
from collector.detectors.config import MeterConfig, SiteConfig, Thresholds
from collector.detectors.findings import Detector, Finding
from collector.detectors.messages import message
from collector.detectors.series import Intervals, run_bounds
from kilowatch.timebase import SLOT_HOURS, local_datetime


def quantile(values: Iterable[float], q: float) -> float:
    """The value at quantile `q` of `values` (nearest rank, no interpolation: always one of them)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Context:
    """One meter as configured: who it is, what it is, and the site rules it is judged by."""

    site: str
    meter: str
    config: MeterConfig
    site_config: SiteConfig

    @property
    def calendar(self) -> SiteCalendar:
        return self.site_config.calendar

    @property
    def thresholds(self) -> Thresholds:
        return self.config.thresholds or self.site_config.thresholds

    def cost(self, waste: Iterable[tuple[int, float]]) -> tuple[float, float]:
        """(kWh, VND) of (event time, kWh) pieces, each priced at its time-of-use band."""
        kwh = vnd = 0.0
        for ts, piece in waste:
            kwh += piece
            vnd += piece * self.site_config.tariff.price(self.calendar.band_at(ts))
        return kwh, vnd

    def finding(
        self,
        detector: Detector,
        rule: str,
        episode: Episode,
        waste: Iterable[tuple[int, float]] = (),
        magnitude: float | None = None,
    ) -> Finding:
        kwh, vnd = self.cost(waste)
        en, vi = message(
            detector, rule, meter=self.meter, since=local_datetime(episode.start).strftime("%Y-%m-%d %H:%M"),
            kwh=kwh, vnd=vnd, magnitude=magnitude,
        )  # fmt: skip
        return Finding(
            site=self.site, meter=self.meter, detector=detector, rule=rule, start_ms=episode.start,
            end_ms=episode.end, detected_at=episode.detected, wasted_kwh=round(kwh, 3), cost_vnd=round(vnd),
            magnitude=None if magnitude is None else round(magnitude, 3), message_en=en, message_vi=vi,
        )  # fmt: skip

    def excess_finding(
        self,
        detector: Detector,
        rule: str,
        episode: Episode,
        intervals: Intervals,
        refs: Sequence[float | None],
    ) -> Finding:
        """A finding wasting what each interval of `episode` drew above its reference `refs[i]`; its
        magnitude is the mean excess kW."""
        waste = [
            (intervals.ts(i), (w - r) * SLOT_HOURS)
            for i in range(episode.first, episode.last)
            if (w := intervals.kw[i]) is not None and (r := refs[i]) is not None and w > r
        ]
        excess = sum(x for _, x in waste) / SLOT_HOURS / max(1, episode.last - episode.first)
        return self.finding(detector, rule, episode, waste, excess)


def one_per_episode(ctx: Context, findings: Sequence[Finding], end_ms: int) -> list[Finding]:
    """`findings` of one meter with each rule's episodes that re-open within the hold-off
    (``thresholds.hold_off_min``) of their end merged into one, and an episode that ended less than the
    hold-off before `end_ms` (the end of the data judged) still open: whether it comes back is not known
    yet. Event time only, so live data, a backlog and a replay merge alike."""
    hold_off = round(ctx.thresholds.hold_off_min * 60_000)
    by_rule: dict[tuple[Detector, str], list[Finding]] = {}
    for f in sorted(findings, key=lambda f: f.start_ms):
        episodes = by_rule.setdefault((f.detector, f.rule), [])
        last = episodes[-1] if episodes else None
        if last is not None and (last.end_ms is None or f.start_ms <= last.end_ms + hold_off):
            episodes[-1] = _merged(ctx, last, f)
        else:
            episodes.append(f)
    return [
        f.model_copy(update={"end_ms": None}) if f.end_ms is not None and f.end_ms + hold_off > end_ms else f
        for episodes in by_rule.values()
        for f in episodes
    ]


def _merged(ctx: Context, first: Finding, then: Finding) -> Finding:
    """One finding from `first` to the end of `then`, wasting what both did."""
    kwh, vnd = first.wasted_kwh + then.wasted_kwh, first.cost_vnd + then.cost_vnd
    sizes = [m for m in (first.magnitude, then.magnitude) if m is not None]
    magnitude = max(sizes) if sizes else None
    end = None if first.end_ms is None or then.end_ms is None else max(first.end_ms, then.end_ms)
    en, vi = message(
        first.detector, first.rule, meter=ctx.meter, since=local_datetime(first.start_ms).strftime("%Y-%m-%d %H:%M"),
        kwh=kwh, vnd=vnd, magnitude=magnitude,
    )  # fmt: skip
    return first.model_copy(
        update={
            "end_ms": end, "wasted_kwh": round(kwh, 3), "cost_vnd": vnd, "magnitude": magnitude,
            "message_en": en, "message_vi": vi,
        }
    )  # fmt: skip


class Step(Enum):
    """How one step (a sample or an interval) bears on a condition."""

    BAD = "bad"
    """The condition holds."""
    GOOD = "good"
    """It does not: counts towards clearing."""
    HOLD = "hold"
    """In between: an open episode stays open, a pending one starts over."""
    UNKNOWN = "unknown"
    """No data, or outside the rule's scope: ends any episode where it began."""


@dataclass(frozen=True)
class Episode:
    start: int
    detected: int
    end: int | None
    first: int
    """Index of the first step."""
    last: int
    """Index past the last bad step."""


STEP_CODE: dict[Step, int] = {step: code for code, step in enumerate(Step)}
"""Each step's code in the int8 arrays vectorised detectors hand to :func:`episodes_of`."""
_BAD, _GOOD, _UNKNOWN = STEP_CODE[Step.BAD], STEP_CODE[Step.GOOD], STEP_CODE[Step.UNKNOWN]


def episodes(
    steps: Iterable[tuple[int, Step]], step_ms: int, open_ms: int, clear_ms: int
) -> Iterator[Episode]:
    """:func:`episodes_of` for (event time, step) pairs."""
    listed = list(steps)
    ts = np.fromiter((t for t, _ in listed), dtype=np.int64, count=len(listed))
    codes = np.fromiter((STEP_CODE[s] for _, s in listed), dtype=np.int8, count=len(listed))
    return iter(episodes_of(ts, codes, step_ms, open_ms, clear_ms))


def episodes_of(
    ts: npt.NDArray[np.int64], codes: npt.NDArray[np.int8], step_ms: int, open_ms: int, clear_ms: int
) -> list[Episode]:
    """Episodes of a condition: open once BAD lasts `open_ms` (from the first BAD step's time to the end
    of the last), clear once GOOD lasts `clear_ms` (ending where GOOD began) or at an UNKNOWN step. An
    episode still open at the end has ``end`` None. Event time only: the same steps give the same episodes
    however and whenever they arrived.

    Steps are event times `ts` with their :data:`STEP_CODE` `codes`. Between changes of step only the
    opening or clearing time can be reached, so this walks runs of equal steps (a handful a day), not
    steps."""
    starts, ends = run_bounds(codes.size, codes[1:] != codes[:-1])
    found = []
    first: tuple[int, int] | None = None
    """(index, ts) of the first BAD step of the current run or episode."""
    detected: int | None = None
    good: tuple[int, int] | None = None
    last_bad = 0

    def reached(a: int, b: int, since: int) -> int | None:
        """The first index in [a, b) whose step ends `since` or later."""
        hits = np.flatnonzero(ts[a:b] + step_ms >= since)
        return a + int(hits[0]) if hits.size else None

    for a, b, code in zip(starts.tolist(), ends.tolist(), codes[starts].tolist(), strict=True):
        if code == _BAD:
            good = None
            if first is None:
                first = (a, int(ts[a]))
            last_bad = b
            if detected is None and (k := reached(a, b, first[1] + open_ms)) is not None:
                detected = int(ts[k]) + step_ms
        elif detected is None:
            first = None
        elif code == _UNKNOWN:
            assert first is not None
            found.append(Episode(first[1], detected, int(ts[a]), first[0], last_bad))
            first = detected = good = None
        elif code == _GOOD:
            assert first is not None
            good = good or (a, int(ts[a]))
            if reached(a, b, good[1] + clear_ms) is not None:
                found.append(Episode(first[1], detected, good[1], first[0], last_bad))
                first = detected = good = None
        else:
            good = None
    if detected is not None and first is not None:
        found.append(Episode(first[1], detected, None, first[0], last_bad))
    return found
