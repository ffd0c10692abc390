"""What every detector shares: the meter's context, episode tracking with open/clear rules, and turning
an episode into a :class:`Finding` with its wasted energy, its cost and its messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from collector.calendars import SiteCalendar, local_datetime
from collector.detectors.config import MeterConfig, SiteConfig, Thresholds
from collector.detectors.findings import Detector, Finding
from collector.detectors.messages import message


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


def episodes(
    steps: Iterable[tuple[int, Step]], step_ms: int, open_ms: int, clear_ms: int
) -> Iterator[Episode]:
    """Episodes of a condition: open once BAD lasts `open_ms` (from the first BAD step's time to the end
    of the last), clear once GOOD lasts `clear_ms` (ending where GOOD began) or at an UNKNOWN step. An
    episode still open at the end has ``end`` None. Event time only: the same steps give the same episodes
    however and whenever they arrived."""
    first: tuple[int, int] | None = None
    """(index, ts) of the first BAD step of the current run or episode."""
    detected: int | None = None
    good: tuple[int, int] | None = None
    last_bad = 0
    for i, (ts, step) in enumerate(steps):
        if step is Step.BAD:
            good = None
            if first is None:
                first = (i, ts)
            last_bad = i + 1
            if detected is None and ts + step_ms - first[1] >= open_ms:
                detected = ts + step_ms
            continue
        if detected is None:
            first = None
            continue
        assert first is not None
        if step is Step.UNKNOWN:
            yield Episode(first[1], detected, ts, first[0], last_bad)
            first = detected = good = None
        elif step is Step.GOOD:
            good = good or (i, ts)
            if ts + step_ms - good[1] >= clear_ms:
                yield Episode(first[1], detected, good[1], first[0], last_bad)
                first = detected = good = None
        else:
            good = None
    if detected is not None and first is not None:
        yield Episode(first[1], detected, None, first[0], last_bad)
