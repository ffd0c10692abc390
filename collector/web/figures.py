"""What the pages show beyond the API's answers, computed from them: a site's totals of a day and its load
against a typical day. Pure functions, so the browser test can check the pages against the API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from collector.detectors.config import Role
from collector.reports import MeterDay, SiteDay
from kilowatch.timebase import SLOTS_PER_DAY

TYPICAL_DAYS = 4
"""A typical day is the mean of this many earlier days of the same kind (open or closed) with data..."""
TYPICAL_LOOKBACK = 28
"""...found within this many days before."""


@dataclass(frozen=True)
class SiteTotals:
    """A site's day: energy and cost of its whole supply, the shares of it after hours and in peak bands
    (what alerts wasted is per meter: a sub-meter's waste is in its main meter's too)."""

    energy_kwh: float
    cost_vnd: float
    after_hours_share: float | None
    peak_band_share: float | None


def supply(report: SiteDay) -> list[MeterDay]:
    """The meters that measure the whole site: its main meters, or every meter when none is main (a
    sub-meter's energy is already in its main meter's)."""
    mains = [m for m in report.meters if m.role is Role.OFFICE_MAIN]
    return mains or report.meters


def _share(meters: Sequence[MeterDay], share: Callable[[MeterDay], float | None]) -> float | None:
    """The energy-weighted share over `meters` (None when none of them has any energy)."""
    weighed = [(m.energy_kwh, s) for m in meters if (s := share(m)) is not None]
    total = sum(kwh for kwh, _ in weighed)
    return sum(kwh * s for kwh, s in weighed) / total if total > 0 else None


def site_totals(report: SiteDay) -> SiteTotals:
    meters = supply(report)
    return SiteTotals(
        energy_kwh=sum(m.energy_kwh for m in meters),
        cost_vnd=sum(m.cost_vnd for m in meters),
        after_hours_share=_share(meters, lambda m: m.after_hours_share),
        peak_band_share=_share(meters, lambda m: m.peak_band_share),
    )


def typical_days(
    day: date, is_open: Callable[[date], bool], load: Callable[[date], dict[int, float]]
) -> dict[date, dict[int, float]]:
    """The days `day`'s load is compared with, and their `load`: the latest earlier days of the same kind
    that have data."""
    kind = is_open(day)
    found: dict[date, dict[int, float]] = {}
    for d in (day - timedelta(days=n) for n in range(1, TYPICAL_LOOKBACK + 1)):
        if len(found) == TYPICAL_DAYS:
            break
        if is_open(d) == kind and (slots := load(d)):
            found[d] = slots
    return found


def slot_mean(days: Sequence[dict[int, float]]) -> list[float | None]:
    """Per 15-minute slot of the day, the mean of the days that have it (None where none has)."""
    out: list[float | None] = []
    for slot in range(SLOTS_PER_DAY):
        seen = [d[slot] for d in days if slot in d]
        out.append(sum(seen) / len(seen) if seen else None)
    return out
