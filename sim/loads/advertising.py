"""An advertising sign: lit in the evening, cut to under half its power in the evening peak band when
its site complies with the plan (R7), burning at full power when it does not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np

from kilowatch.timebase import VIETNAM_TZ
from sim.calendar import PEAK_BANDS, in_peak_band
from sim.load_model import Demand, Flags, PhaseShares, Times, local_hour, phase_shares, split
from sim.loads import Category, Mode, Span

_STANDBY = (10.0, 0.6)


@dataclass(frozen=True)
class AdvertisingSchedule:
    on: float = 18.0
    off: float = 23.0
    complies: bool = True
    """Cuts its power in the evening peak band, as the plan asks."""
    cut_to: float = 0.45
    """Share of power left during the peak band when it complies."""


@dataclass(frozen=True)
class Advertising:
    seed: int
    key: str
    rated_w: float
    shares: PhaseShares
    schedule: AdvertisingSchedule = AdvertisingSchedule()
    modes: frozenset[Mode] = frozenset({Mode.UNCUT})

    def lit(self, ms: Times) -> Flags:
        hour, on, off = local_hour(ms), self.schedule.on, self.schedule.off
        result: Flags = (on <= hour) & (hour < off) if on < off else (hour >= on) | (hour < off)
        return result

    def demand(self, ms: Times, mode: Mode | None = None) -> Demand:
        cuts = self.schedule.complies and mode is not Mode.UNCUT
        share = np.where(in_peak_band(ms) & cuts, self.schedule.cut_to, 1.0)
        return split(
            ms, [_STANDBY, (self.rated_w * share * self.lit(ms), 0.93)], self.shares, self.seed, self.key
        )

    def spans(self, day: date) -> list[Span]:
        """A sign that does not comply is waste every peak evening; on Sunday there is no peak to cut."""
        midnight = datetime.combine(day, time(), VIETNAM_TZ)
        _, (peak_from, peak_to) = PEAK_BANDS
        start = midnight + timedelta(hours=max(peak_from, self.schedule.on))
        end = midnight + timedelta(hours=peak_to)
        if start >= end:
            return []
        if day.weekday() == 6:
            return [Span("sunday_no_peak", Category.BENIGN, start, end, self.rated_w / 1000, "kW")]
        if not self.schedule.complies:
            return [Span("ad_not_cut", Category.ANOMALY, start, end, self.rated_w / 1000, "kW")]
        return []


def advertising(seed: int, key: str, rated_w: float, schedule: AdvertisingSchedule) -> Advertising:
    return Advertising(seed, key, rated_w, phase_shares(seed, key, spread=0.3), schedule)
