"""R9, the peak bands: a circuit using clearly more than on comparable days, a large machine LOADED, and
a configured demand limit approached.

Overuse compares each peak-band interval with the *median* of the same interval on the last four same
weekdays (or, lacking two, recent days), open or closed like the day judged (a machine with its usual
high over the band instead), scaled up by as much as the same day's hour before the band already drew
above theirs (a hot day: the air conditioning's temperature-driven rise carries into the band). An episode
lasts 30 min (domain.md) and begins in one of two ways:

- equipment switched on in the band and still on, seen in the minute data as a rise larger than any on
  the comparable days there and twice the day's own noise before the band, adding at least the ratio's
  share of the usual draw and leaving the circuit above its reference by half the rise (a +15 % step is
  plain in the minutes however much the day wanders; a job resuming on a plant's main meter only brings
  it back to its usual draw);
- in occupied hours, a draw beyond the circuit's own day-to-day spread in that band (each comparable
  day judged against the others the same way), not a share of its rated kW.

Outside occupied hours (the evening band of an office) late departures and permitted overtime draw more
than usual too, but they only ramp down or stay, so an episode there must begin with load added: a
switch as above, or a step up from the band's last quarter hour before beyond the usual step there.
Once begun, an episode goes on while the circuit stays above the reference by the ratio and a noise
floor; outside occupied hours also while it stays above the plain reference by half the excess it began
with, since the hot-day adjustment fits the day's own ramp-down, not load added on top of it. A closed
day without comparable days is judged against its hour before the band; an open one is not judged. A
machine is judged on its level only: its jobs switch on and off all day.
"""

from __future__ import annotations

import math
import statistics
from functools import cached_property

from collector.detectors.common import STEP_CODE, Context, Step, episodes, episodes_of, quantile
from collector.detectors.config import Role
from collector.detectors.findings import Detector, Finding
from collector.detectors.series import Series
from collector.detectors.states import State, state_steps
from collector.detectors.switching import Switching
from kilowatch.calendars import BANDS, Band
from kilowatch.timebase import SLOT_MS, day_start_ms, local_day, slot_of_day

_SAME_WEEKDAY_WEEKS = 5
_RECENT_DAYS = 10
_SCALE_DAYS = 7
"""Open days (found within twice as many) whose highs give a circuit's usual scale."""
_BEFORE_SLOTS = 4
"""The hour before a peak band: what the circuit drew that day just before it."""


def _slot(ts: int) -> tuple[int, int]:
    return local_day(ts), slot_of_day(ts)


def detect(ctx: Context, series: Series) -> list[Finding]:
    findings = _Overuse(ctx, series).findings()
    if ctx.config.large:
        findings += _large_machine(ctx, series)
    if ctx.config.demand_limit_kw is not None:
        findings += _demand(ctx, series, ctx.config.demand_limit_kw)
    return findings


def predicted_demand(ts: list[int], kw: list[float], poll_ms: int, window_ms: int) -> list[float]:
    """At each sample, the demand its clock-aligned window will reach if the load stays as it is now:
    D = (E_so_far + P_now * t_remaining) / W, energy so far from the earlier samples of the window."""
    predicted = []
    window = None
    energy_ms = 0.0  # kW x ms so far in the window
    for t, w in zip(ts, kw, strict=True):
        if t // window_ms != window:
            window, energy_ms = t // window_ms, 0.0
        end = (window + 1) * window_ms
        predicted.append((energy_ms + w * (end - t)) / window_ms)
        energy_ms += w * min(poll_ms, end - t)
    return predicted


def _demand(ctx: Context, series: Series, limit_kw: float) -> list[Finding]:
    """A demand limit approached (warn) or passed (alarm) by the running window's predicted demand;
    either clears below the clear share. A silence ends it (unknown, not cleared)."""
    settings = ctx.thresholds.peak
    ts, kw = series.usable
    demand = predicted_demand(ts, kw, series.poll_ms, settings.demand_window_min * 60_000)
    clear = settings.demand_clear * limit_kw
    gap = ctx.thresholds.data_quality.silent_polls * series.poll_ms
    findings = []
    for rule, share in (("demand_warning", settings.demand_warn), ("demand_exceeded", settings.demand_alarm)):
        steps: list[tuple[int, Step]] = []
        on = False
        for i, (t, d) in enumerate(zip(ts, demand, strict=True)):
            if i and t - ts[i - 1] > gap:
                steps.append((ts[i - 1] + series.poll_ms, Step.UNKNOWN))
                on = False
            on = d >= share * limit_kw or (on and d >= clear)
            steps.append((t, Step.BAD if on else Step.GOOD))
        for ep in episodes(steps, series.poll_ms, series.poll_ms, series.poll_ms):
            during = [
                d for t, d in zip(ts, demand, strict=True) if ep.start <= t and (ep.end is None or t < ep.end)
            ]
            findings.append(ctx.finding(Detector.PEAK, rule, ep, magnitude=max(during)))
    return findings


def _comparable_days(ctx: Context, kw: dict[tuple[int, int], float], day: int, slot: int) -> list[int]:
    """The slot on the last `reference_days` same weekdays, completed with the most recent days that had
    a peak band there when fewer exist (two late departures should not make a median); all of the same
    kind, open or closed by the site's calendar (a holiday says nothing of a working day)."""
    n = ctx.thresholds.peak.reference_days
    open_today = bool(ctx.calendar.occupied_slots(day))

    def alike(d: int) -> bool:
        return (d, slot) in kw and bool(ctx.calendar.occupied_slots(d)) == open_today

    same = [d for k in range(1, _SAME_WEEKDAY_WEEKS + 1) if alike(d := day - 7 * k)][:n]
    if len(same) == n:
        return same
    recent = [
        d
        for d in range(day - 1, day - _RECENT_DAYS, -1)
        if d not in same and alike(d) and ctx.calendar.bands(d)[slot] is Band.PEAK
    ]
    return same + recent[: n - len(same)]


def _band_bounds(ctx: Context, day: int, slot: int) -> tuple[int, int]:
    """First and last slot of the peak band `slot` belongs to on `day`."""
    bands = ctx.calendar.bands(day)
    first = last = slot
    while first > 0 and bands[first - 1] is Band.PEAK:
        first -= 1
    while last + 1 < len(bands) and bands[last + 1] is Band.PEAK:
        last += 1
    return first, last


def _before_band(kw: dict[tuple[int, int], float], day: int, first: int) -> tuple[float, float] | None:
    """(mean kW of the hour before the peak band beginning at slot `first`, kW of its last quarter hour
    with data) on `day`."""
    before = [kw[(day, s)] for s in range(max(0, first - _BEFORE_SLOTS), first) if (day, s) in kw]
    return (statistics.fmean(before), before[-1]) if len(before) >= _BEFORE_SLOTS // 2 else None


_STEP_SHARE = 0.1
_RISE = 1.5
"""Outside occupied hours an episode without a switch seen must begin with a step up of the quarter-hour
means this many times `_STEP_SHARE` of the circuit's typical kW above the usual step at that quarter
hour: a circuit's day-to-day wander moves them by up to about one."""


_SWITCH = 2.0
"""A switch must rise this many times the largest rise of the day's own hour before the band."""
_MIN_SPREAD = 0.04
"""The least spread a circuit is credited with: a few comparable days understate it, and a hot day's
adjustment misses by about this much."""
_UNKNOWN_SPREAD = 0.1
"""A circuit's relative spread while fewer comparable days than `reference_days` tell it (three days
judged against two others say little of it)."""
_MACHINE_HIGH = 0.9
"""A machine's reference: this quantile of its load over the whole band on the comparable days."""


def _usual_high(kw: dict[tuple[int, int], float], days: list[int], band: tuple[int, int]) -> float:
    """What a machine usually draws at most in the peak `band` (first, last slot): jobs start and stop at
    random, so a slot's median would call an ordinary loaded hour overuse; drawing more than it does
    when loaded is."""
    return quantile(
        (kw[(d, s)] for d in days for s in range(band[0], band[1] + 1) if (d, s) in kw), _MACHINE_HIGH
    )


class _Overuse:
    """One meter's peak-band intervals judged against its comparable days; per-day and per-band figures
    are found once per pass."""

    def __init__(self, ctx: Context, series: Series) -> None:
        self.ctx = ctx
        self.settings = ctx.thresholds.peak
        self.intervals = series.intervals
        self.kw = {_slot(self.intervals.ts(i)): w for i, w in enumerate(self.intervals.kw) if w is not None}
        by_day: dict[int, list[float]] = {}
        for (d, _), load in self.kw.items():
            by_day.setdefault(d, []).append(load)
        self.highs = {d: max(loads) for d, loads in by_day.items()}
        self.series = series
        self._typical: dict[int, float] = {}
        self._bounds: dict[tuple[int, int], tuple[int, int]] = {}
        self._befores: dict[tuple[int, int], tuple[float, float] | None] = {}
        self._parts: dict[tuple[int, int, bool], tuple[int, int] | None] = {}
        self._spreads: dict[tuple[int, int], float] = {}
        self._switched: dict[tuple[int, int], list[tuple[int, int, float]]] = {}

    @cached_property
    def switching(self) -> Switching:
        """Built only for a meter judged outside occupied hours in a peak band."""
        return Switching(self.series)

    def bounds(self, day: int, slot: int) -> tuple[int, int]:
        """:func:`_band_bounds`, once per day and slot."""
        if (day, slot) not in self._bounds:
            self._bounds[(day, slot)] = _band_bounds(self.ctx, day, slot)
        return self._bounds[(day, slot)]

    def typical(self, day: int) -> float:
        """The larger of the rated kW and the usual high of the last open days (a week of holidays says
        nothing of what the circuit carries)."""
        if day not in self._typical:
            recent = [d for d in range(day - 1, day - 1 - 2 * _SCALE_DAYS, -1) if d in self.highs]
            open_days = [self.highs[d] for d in recent if self.ctx.calendar.occupied_slots(d)]
            usual = open_days[:_SCALE_DAYS] or [self.highs[d] for d in recent[:_SCALE_DAYS]]
            self._typical[day] = max(self.ctx.config.rated_kw, statistics.median(usual) if usual else 0.0)
        return self._typical[day]

    def floor(self, day: int) -> float:
        """The noise floor: no excess below it counts."""
        return self.settings.min_excess_share * self.typical(day)

    def above(self, w: float, ref: float, day: int) -> bool:
        return w > self.settings.ratio * ref and w - ref > self.floor(day)

    def before_band(self, day: int, slot: int) -> tuple[float, float] | None:
        """The hour before `day`'s peak band holding `slot` (see :func:`_before_band`)."""
        first = self.bounds(day, slot)[0]
        if (day, first) not in self._befores:
            self._befores[(day, first)] = _before_band(self.kw, day, first)
        return self._befores[(day, first)]

    def scale(self, day: int, slot: int, days: list[int]) -> float:
        """The hot-day adjustment: what `day` drew in the hour before the band over what `days` drew
        there (air conditioning follows the day's temperature, before the band and in it; early in the
        season a hot spell doubles it), at least 1 (a late start is no cooler day); 1 for a machine,
        whose hour before says which jobs ran, not the weather."""
        before = self.before_band(day, slot)
        earlier = [b[0] for d in days if (b := self.before_band(d, slot)) is not None]
        if before is None or not earlier or self.ctx.config.role is Role.MACHINE:
            return 1.0
        return max(before[0] / max(statistics.median(earlier), 1e-9), 1.0)

    def plain(self, slot: int, days: list[int]) -> float:
        """The unscaled reference of `slot` from `days` (a machine: its usual high over the band)."""
        if self.ctx.config.role is Role.MACHINE:
            return _usual_high(self.kw, days, self.bounds(days[0], slot))
        return statistics.median(self.kw[(d, slot)] for d in days)

    def reference(self, day: int, slot: int, days: list[int]) -> tuple[float, float] | None:
        """(reference kW scaled for a hot day, unscaled) of `slot`, or None where it is not judged."""
        if len(days) >= 2:
            plain = self.plain(slot, days)
            return plain * self.scale(day, slot, days), plain
        before = self.before_band(day, slot)
        if not self.ctx.calendar.occupied_slots(day) and before is not None:
            return before[0], before[0]  # a closed day: the hour before is its base load
        return None

    def spread(self, day: int, slot: int, days: list[int]) -> float:
        """The circuit's own day-to-day spread in this band, relative to its reference: each comparable
        day judged against the others the way `day` is (hot-day adjustment included), the root mean
        square of how far above its reference it drew. A steady circuit is held to the ratio alone, one
        that follows the weather to what its ordinary days do."""
        first = self.bounds(day, slot)[0]
        if (day, first) not in self._spreads:
            self._spreads[(day, first)] = self._spread(day, slot, days)
        return self._spreads[(day, first)]

    def _spread(self, day: int, slot: int, days: list[int]) -> float:
        if len(days) < self.settings.reference_days:
            return _UNKNOWN_SPREAD
        first, last = self.bounds(day, slot)
        above = []
        for d in days:
            others = [e for e in days if e != d]
            for s in range(first, last + 1):
                if (d, s) in self.kw and all((e, s) in self.kw for e in others):
                    ref = self.plain(s, others) * self.scale(d, s, others)
                    above.append(max(self.kw[(d, s)] / max(ref, 1e-9) - 1.0, 0.0))
        return (
            max(math.sqrt(statistics.fmean(x * x for x in above)), _MIN_SPREAD) if above else _UNKNOWN_SPREAD
        )

    def over_spread(self, w: float, ref: float, day: int, slot: int, days: list[int]) -> bool:
        """Above the reference by the ratio, the noise floor and `spread_factor` times the spread."""
        if not self.above(w, ref, day):
            return False
        return w > ref * (1.0 + self.settings.spread_factor * self.spread(day, slot, days))

    def steps_up(self, w: float, days: list[int], day: int, slot: int) -> bool:
        """From the band's last quarter hour before, the load rose, by more than it usually does there and
        more than noise: an end of day ramps down or stays (a late departure), load switched on adds."""
        before = self.before_band(day, slot)
        if before is None:
            return False
        usual = [self.kw[(d, slot)] - b[1] for d in days if (b := self.before_band(d, slot)) is not None]
        return w - before[1] > max(
            statistics.median(usual) if usual else 0.0, 0.0
        ) + _RISE * _STEP_SHARE * self.typical(day)

    def band_part(self, day: int, slot: int, *, closed: bool) -> tuple[int, int] | None:
        """[from, to) ms of `day`'s peak band holding `slot`, or of its part outside occupied hours."""
        first, last = self.bounds(day, slot)
        if (day, first, closed) not in self._parts:
            occupied = self.ctx.calendar.occupied_slots(day) if closed else frozenset()
            free = next((s for s in range(first, last + 1) if s not in occupied), None)
            midnight = day_start_ms(day)
            self._parts[(day, first, closed)] = (
                None if free is None else (midnight + free * SLOT_MS, midnight + (last + 1) * SLOT_MS)
            )
        return self._parts[(day, first, closed)]

    def switched_on(self, days: list[int], day: int, slot: int, *, closed: bool) -> float:
        """The kW of load switched on in the band (or its part outside occupied hours) and still on during
        `slot` (0: none): a rise beyond the noise floor and, as a share of the load it rose from (noise
        grows with the load), beyond the largest rise of that part of the band on comparable days (a
        light that switches on there every evening is not extra) and twice the largest of the day's own
        hour before the band (its minute-to-minute noise). The minute data
        show a switch that the day-to-day spread or an end-of-day ramp hides from quarter-hour means."""
        part = self.band_part(day, slot, closed=closed)
        if part is None:
            return 0.0
        if part not in self._switched:
            floor = self.floor(day)
            usual = [
                self.switching.largest_share(*p, floor)
                for d in days
                if (p := self.band_part(d, slot, closed=closed))
            ]
            first = day_start_ms(day) + self.bounds(day, slot)[0] * SLOT_MS
            own = self.switching.largest_share(first - _BEFORE_SLOTS * SLOT_MS, first, floor)
            share = max(statistics.median(usual) if usual else 0.0, _SWITCH * own)
            self._switched[part] = self.switching.switched_on(*part, floor, share)
        start = day_start_ms(day) + slot * SLOT_MS
        return max(
            (r for on, off, r in self._switched[part] if on < start + SLOT_MS and start < off), default=0.0
        )

    def opens(self, w: float, refs: tuple[float, float], days: list[int], day: int, slot: int) -> bool:
        """Whether interval `slot` (drawing `w` against `refs`, hot-day adjusted and plain) can begin an
        episode: load switched on that adds the ratio's share of the reference and of what the circuit
        drew before it, and leaves the circuit above its reference (and its plain one by half the rise:
        a job resuming after a pause, on a plant's main meter, brings the circuit back to its usual draw,
        which a worked Saturday morning's lights then keep a few per cent above), or, in occupied
        hours, a draw beyond the circuit's own spread. Outside
        them late departures and overtime draw more than usual too, but only ramp down or stay: there
        load must have been added, seen as a switch or as a step up from the band's last quarter hour
        before. A machine: drawing beyond its usual high by its spread and `_STEP_SHARE` of its size."""
        ref, plain = refs
        if w - min(ref, plain) <= self.floor(day):
            return False
        if self.ctx.config.role is Role.MACHINE:
            # Jobs start and stop all day, so a switch says nothing; drawing more than when loaded does.
            return w - ref > _STEP_SHARE * self.typical(day) and self.over_spread(w, ref, day, slot, days)
        occupied = slot in self.ctx.calendar.occupied_slots(day)
        rise = self.switched_on(days, day, slot, closed=not occupied)
        if rise >= (self.settings.ratio - 1) * max(ref, w - rise) and w > max(
            ref, min(ref, plain) + rise / 2
        ):
            return True
        if occupied:
            return self.over_spread(w, ref, day, slot, days)
        return self.above(w, ref, day) and self.steps_up(w, days, day, slot)

    def findings(self) -> list[Finding]:
        ctx, intervals = self.ctx, self.intervals
        refs: list[float | None] = []
        steps: list[tuple[int, Step]] = []
        margin: float | None = None  # while a run of bad intervals lasts: half the excess it began with
        for i, w in enumerate(intervals.kw):
            day, slot = _slot(intervals.ts(i))
            ref = None
            bad = False
            if w is not None and ctx.calendar.bands(day)[slot] is Band.PEAK:
                days = _comparable_days(ctx, self.kw, day, slot)
                judged = self.reference(day, slot, days)
                if judged is not None:
                    ref, plain = judged
                    occupied = slot in ctx.calendar.occupied_slots(day)
                    if (margin is not None and self.above(w, ref, day)) or self.opens(
                        w, judged, days, day, slot
                    ):
                        bad = True
                        margin = (w - ref) / 2 if margin is None else margin
                    elif (
                        margin is not None
                        and not occupied
                        and self.above(w, plain, day)
                        and w - plain >= margin
                    ):
                        # A hot day's scaling fits the circuit's own ramp-down, not load added on top of it.
                        bad = True
                        ref = plain
            if not bad:
                margin = None
            refs.append(ref)
            steps.append((intervals.ts(i), Step.UNKNOWN if ref is None else Step.BAD if bad else Step.GOOD))

        findings = []
        for ep in episodes(steps, SLOT_MS, self.settings.min_intervals * SLOT_MS, SLOT_MS):
            findings.append(ctx.excess_finding(Detector.PEAK, "overuse", ep, intervals, refs))
        return findings


def _large_machine(ctx: Context, series: Series) -> list[Finding]:
    settings = ctx.thresholds.peak
    ts, steps, kw = state_steps(series, ctx.thresholds.idle, ctx.config.rated_kw, State.LOADED)
    if ts.size == 0:
        return []
    slots = ts // SLOT_MS - int(ts[0]) // SLOT_MS  # quarter hours from the one holding the first reading
    peak = ctx.calendar.band_codes(int(ts[0]), int(slots[-1]) + 1)[slots] == BANDS.index(Band.PEAK)
    steps[~peak] = STEP_CODE[Step.UNKNOWN]
    open_ms = round(settings.large_machine_min * 60_000)
    hours = series.poll_ms / 3_600_000
    findings = []
    for ep in episodes_of(ts, steps, series.poll_ms, open_ms, 0):
        waste = list(
            zip(ts[ep.first : ep.last].tolist(), (kw[ep.first : ep.last] * hours).tolist(), strict=True)
        )
        findings.append(ctx.finding(Detector.PEAK, "large_machine_in_peak", ep, waste, float(kw[ep.first])))
    return findings
