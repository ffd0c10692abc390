"""A site's day in figures: what domain.md has each rule report beside its alerts, per configured meter.

- energy and its cost by time-of-use band, from the meter's own counter (the ledger's intervals, as the
  accounting API gives them);
- after hours (R4): base load (10th percentile of the unoccupied 15-minute mean kW), near-peak load
  (97.5th percentile of the day's), their ratio, and the share of energy used after hours (neither
  occupied nor permitted overtime);
- peak bands (R9): their share of the energy and mean kW;
- machines (R10): the share of each shift spent IDLE, flagged above ``thresholds.idle.report_share``;
- the waste counted by the alerts that began that day.

A day is figured from what the ledger holds: intervals without data are left out and counted, so a
partial day says it is partial.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

from pydantic import BaseModel, Field

from collector.alerts import AlertStore
from collector.detectors.common import Context, quantile
from collector.detectors.config import Role, SiteConfig, Sites
from collector.detectors.series import Series
from collector.detectors.states import STATES, State, state_codes
from collector.store import Alert, AlertQuery, IntervalRow, LedgerReader, Location
from kilowatch.calendars import Band
from kilowatch.timebase import (
    DAY_MS,
    SLOT_HOURS,
    SLOT_MS,
    SLOTS_PER_DAY,
    day_number,
    day_start_ms,
    local_datetime,
)

MAX_ALERTS = 10_000
"""Alerts of one site and day counted at most."""


class ShiftIdle(BaseModel):
    start: datetime
    end: datetime
    idle_share: float | None = Field(description="Share of the shift's time with a known state spent IDLE")
    flagged: bool = Field(description="idle_share above the site's thresholds.idle.report_share")


class MeterDay(BaseModel):
    meter: str
    role: Role
    intervals: int = Field(description=f"15-minute intervals with data, of {SLOTS_PER_DAY}")
    energy_kwh: float = Field(description="Imported energy over those intervals, from the meter's counter")
    band_kwh: dict[Band, float] = Field(description="energy_kwh by time-of-use band")
    cost_vnd: float = Field(description="energy_kwh at the site's price of each band")
    base_kw: float | None = Field(description="10th percentile of the unoccupied 15-minute mean kW")
    near_peak_kw: float | None = Field(description="97.5th percentile of the day's 15-minute mean kW")
    base_to_peak: float | None = Field(
        description="base_kw / near_peak_kw: high means a load that never stops"
    )
    after_hours_share: float | None = Field(
        description="Share of energy outside occupied and permitted hours"
    )
    peak_band_share: float | None = Field(description="Share of energy in peak bands")
    peak_band_mean_kw: float | None
    shifts: list[ShiftIdle] = Field(description="Machines: each shift's idle share")
    alerts: int = Field(description="Alerts that began on the day")
    wasted_kwh: float = Field(description="What those alerts wasted")
    wasted_vnd: float


class SiteDay(BaseModel):
    site: str
    day: date = Field(description="The calendar day (Vietnam time)")
    meters: list[MeterDay]
    warnings: list[str] = Field(
        default_factory=list, description="Settings the site has not confirmed that the figures depend on"
    )


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _runs(slots: frozenset[int]) -> list[tuple[int, int]]:
    """[first, end) slot runs of `slots`: a day's shifts."""
    runs: list[tuple[int, int]] = []
    for s in sorted(slots):
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], s + 1)
        else:
            runs.append((s, s + 1))
    return runs


def shift_idle(ctx: Context, series: Series, day: date) -> list[ShiftIdle]:
    """Each shift of `day` (a run of occupied quarter hours) with the share of its readings IDLE."""
    settings = ctx.thresholds.idle
    ts, codes = state_codes(series, settings, ctx.config.rated_kw)
    midnight = day_start_ms(day_number(day))
    shifts = []
    for first, end in _runs(ctx.calendar.occupied_slots(day_number(day))):
        start_ms, end_ms = midnight + first * SLOT_MS, midnight + end * SLOT_MS
        seen = codes[(ts >= start_ms) & (ts < end_ms)]
        known = seen[seen != STATES.index(State.UNKNOWN)]
        share = float((known == STATES.index(State.IDLE)).mean()) if known.size else None
        shifts.append(
            ShiftIdle(
                start=local_datetime(start_ms),
                end=local_datetime(end_ms),
                idle_share=share,
                flagged=share is not None and share > settings.report_share,
            )
        )
    return shifts


def meter_day(
    ctx: Context, day: date, rows: list[IntervalRow], began: list[Alert], series: Series | None
) -> MeterDay:
    """`ctx`'s meter on `day` from its interval `rows`, the alerts that `began` on it that day and, for a
    machine, its readings' `series`."""
    n = day_number(day)
    calendar, start = ctx.calendar, day_start_ms(n)
    bands, occupied, permitted = calendar.bands(n), calendar.occupied_slots(n), calendar.permitted_slots(n)
    kwh: dict[int, float] = {
        (row.start_ms - start) // SLOT_MS: row.energy_import_kwh
        for row in rows
        if row.energy_import_kwh is not None and 0 <= row.start_ms - start < SLOTS_PER_DAY * SLOT_MS
    }
    total = sum(kwh.values())
    band_kwh = {band: sum(e for s, e in kwh.items() if bands[s] is band) for band in Band}
    unoccupied = [e / SLOT_HOURS for s, e in kwh.items() if s not in occupied]
    base = quantile(unoccupied, ctx.thresholds.after_hours.base_quantile) if unoccupied else None
    near_peak = (
        quantile((e / SLOT_HOURS for e in kwh.values()), ctx.thresholds.after_hours.peak_quantile)
        if kwh
        else None
    )
    after_hours = sum(e for s, e in kwh.items() if s not in occupied and s not in permitted)
    peak_slots = sum(1 for s in kwh if bands[s] is Band.PEAK)
    return MeterDay(
        meter=ctx.meter,
        role=ctx.config.role,
        intervals=len(kwh),
        energy_kwh=total,
        band_kwh=band_kwh,
        cost_vnd=sum(e * ctx.site_config.tariff.price(band) for band, e in band_kwh.items()),
        base_kw=base,
        near_peak_kw=near_peak,
        base_to_peak=_share(base, near_peak) if base is not None and near_peak is not None else None,
        after_hours_share=_share(after_hours, total),
        peak_band_share=_share(band_kwh[Band.PEAK], total),
        peak_band_mean_kw=band_kwh[Band.PEAK] / (peak_slots * SLOT_HOURS) if peak_slots else None,
        shifts=shift_idle(ctx, series, day) if series is not None else [],
        alerts=len(began),
        wasted_kwh=sum(a.wasted_kwh for a in began),
        wasted_vnd=sum(a.cost_vnd for a in began),
    )


def site_day(reader: LedgerReader, store: AlertStore, site_id: str, site: SiteConfig, day: date) -> SiteDay:
    """Every configured meter of `site_id` on `day`, from the ledger `reader` and the alert `store`."""
    start = day_start_ms(day_number(day))
    end = start + DAY_MS
    poll_ms = round(site.poll_s * 1000)
    began: dict[str, list[Alert]] = {}
    for alert in store.alerts(AlertQuery(site=site_id, start_ms=start, end_ms=end, limit=MAX_ALERTS)):
        if alert.start_ms >= start:
            began.setdefault(alert.meter, []).append(alert)
    meters = []
    for meter_id, config in site.meters.items():
        ctx = Context(site_id, meter_id, config, site)
        series = None
        if config.role is Role.MACHINE:  # with the days its P_load is learned from
            since = start - (ctx.thresholds.idle.learn_days or 0) * DAY_MS
            samples = reader.power_samples(meter_id, since, end)
            series = Series.of(meter_id, samples, poll_ms=poll_ms, start_ms=since, end_ms=end)
        meters.append(
            meter_day(ctx, day, reader.intervals(meter_id, start, end), began.get(meter_id, []), series)
        )
    warnings = [w for w in (site.calendar.tou_unconfirmed,) if w is not None]
    return SiteDay(site=site_id, day=day, meters=meters, warnings=warnings)


Reporter = Callable[[str, date], SiteDay | None]
"""A site's report of a day, None for a site detection does not judge."""


def ledger_reporter(ledger: Location, sites: Sites) -> Reporter:
    """Reports from `ledger`, each on connections of its own (any thread)."""

    def report(site: str, day: date) -> SiteDay | None:
        if site not in sites.sites:
            return None
        with LedgerReader(ledger) as reader, AlertStore(ledger) as store:
            return site_day(reader, store, site, sites.sites[site], day)

    return report


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_lines(report: SiteDay) -> tuple[list[str], list[str]]:
    """(Vietnamese, English) one line per meter, for the daily digest."""
    vi, en = [], []
    for m in report.meters:
        idle = [(f"{s.start:%H:%M}-{s.end:%H:%M}", _percent(s.idle_share)) for s in m.shifts if s.flagged]
        vi.append(
            f"- {m.meter}: {m.energy_kwh:.1f} kWh, ngoài giờ {_percent(m.after_hours_share)}, "
            f"tải nền/tải đỉnh {_ratio(m.base_to_peak)}, giờ cao điểm {_percent(m.peak_band_share)}"
            + "".join(f"; chạy không tải {share} ca {shift}" for shift, share in idle)
        )
        en.append(
            f"- {m.meter}: {m.energy_kwh:.1f} kWh, {_percent(m.after_hours_share)} after hours, "
            f"base/peak {_ratio(m.base_to_peak)}, {_percent(m.peak_band_share)} in peak bands"
            + "".join(f"; idle {share} of the {shift} shift" for shift, share in idle)
        )
    for warning in report.warnings:
        vi.append(f"- Cảnh báo cấu hình: {warning}")
        en.append(f"- Settings warning: {warning}")
    return vi, en
