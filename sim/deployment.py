"""A scenario made concrete for one run: every meter's load (anomalies injected, main meters summing
their sub-meters) and every anomaly placed on the timeline with its ground-truth label."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np

from kilowatch.timebase import VIETNAM_TZ
from sim.anomalies import LOAD_EFFECTS, AnomalyKind, Injected, Injection, category
from sim.load_model import Times, instants, seeded_rng, uniform
from sim.loads import Category, Load
from sim.loads.advertising import AdvertisingSchedule, advertising
from sim.loads.machine import ShiftSchedule, machine
from sim.loads.main_meter import MainMeter
from sim.loads.office import OfficeSchedule, office
from sim.loads.street_lighting import LightingSchedule, street_lighting
from sim.loads.trend import Trend
from sim.meter import SimulatedMeter, Values
from sim.scenario import AnomalySpec, ExpandedMeter, Scenario, hours


@dataclass(frozen=True)
class Placed:
    """One anomaly on one target's timeline: its label is the ground truth."""

    kind: AnomalyKind
    target: str
    """A meter id, or ``<site>/<gateway>`` for a gateway fault."""
    start: datetime
    end: datetime
    magnitude: float
    unit: str
    spec: AnomalySpec

    @property
    def category(self) -> Category:
        return category(self.kind)

    def active(self, t: datetime) -> bool:
        return self.start <= t < self.end


def _base_load(seed: int, meter: ExpandedMeter) -> Load | None:
    """The meter's own circuits; None for a feeder, which has none."""
    spec, schedule, key = meter.spec, meter.site.schedule, meter.id
    if spec.model == "feeder":
        return None
    rated_w = spec.rated_kw * 1000
    if spec.model == "office":
        (m, a) = schedule.office.hours
        office_schedule = OfficeSchedule(
            ((hours(m.start), hours(m.end)), (hours(a.start), hours(a.end))),
            schedule.office.saturday_work, schedule.office.overtime, frozenset(schedule.office.holidays_worked),
        )  # fmt: skip
        return office(seed, meter.site_id, key, rated_w, spec.parts, office_schedule)
    if spec.model == "lighting_cabinet":
        lighting = schedule.lighting
        return street_lighting(seed, key, rated_w, LightingSchedule(
            lighting.mode, hours(lighting.on_at), hours(lighting.off_at),
            tuple((hours(step.at), step.level) for step in lighting.dimming),
            meter.site.coordinates.lat, meter.site.coordinates.lon,
        ))  # fmt: skip
    if spec.model == "advertising":
        ad = schedule.advertising
        return advertising(
            seed, key, rated_w, AdvertisingSchedule(hours(ad.on_at), hours(ad.off_at), ad.complies, ad.cut_to)
        )
    shifts = ShiftSchedule(
        tuple((hours(w.start), hours(w.end)) for w in schedule.shifts.shifts), schedule.shifts.saturday
    )
    return machine(seed, key, rated_w, shifts, spec.large)


def place(scenario: Scenario, start: date, days: int) -> list[Placed]:
    """Every anomaly of the scenario that falls inside the run of `days` from local `start`."""
    placed = []
    for i, spec in enumerate(scenario.anomalies):
        if spec.count is None:
            targets = [(spec.meter or spec.gateway or "", spec.day)]
        else:
            effect = LOAD_EFFECTS.get(spec.kind)
            eligible = [
                m.id
                for m in scenario.meters
                if (effect is None or not effect.models or m.spec.model in effect.models)
                and (not spec.sites or m.site.id in spec.sites)
            ]
            rng = seeded_rng("place", scenario.seed, i, start.isoformat(), days)
            chosen = rng.sample(eligible, min(spec.count, len(eligible)))
            candidates = _days_for(spec.kind, start, days)
            targets = [(meter, candidates[rng.randrange(len(candidates))]) for meter in chosen if candidates]
        for target, day in targets:
            if day >= days:
                continue
            midnight = datetime.combine(start + timedelta(days=day), time(), VIETNAM_TZ)
            window_start = midnight + timedelta(hours=hours(spec.window.start))
            window_end = midnight + timedelta(hours=hours(spec.window.end))
            magnitude, unit = _magnitude(scenario, spec, target)
            placed.append(Placed(spec.kind, target, window_start, window_end, magnitude, unit, spec))
    return placed


SUNDAY = 6
"""`date.weekday()` of a Sunday."""
PEAK_BAND_KINDS = frozenset(
    {AnomalyKind.PEAK_OVERUSE, AnomalyKind.MACHINE_PEAK_LOADED, AnomalyKind.AD_NOT_CUT}
)
"""Anomalies that only exist in a peak band (advertising not cut in the evening peak among them): never
placed on a Sunday, which has none (Vietnam's TOU calendars, Circular 16/2014 and its 2026 successor alike)."""


def _days_for(kind: AnomalyKind, start: date, days: int) -> list[int]:
    """The run's days an anomaly of `kind` can be placed on (each day index, from local `start`)."""
    every = list(range(days))
    if kind not in PEAK_BAND_KINDS:
        return every
    return [d for d in every if (start + timedelta(days=d)).weekday() != SUNDAY]


def _magnitude(scenario: Scenario, spec: AnomalySpec, target: str) -> tuple[float, str]:
    if spec.magnitude_kw is not None:
        return spec.magnitude_kw, "kW"
    if spec.seconds is not None:
        return spec.seconds, "s"
    if spec.code is not None:
        return spec.code, "code"
    if spec.kind in LOAD_EFFECTS:
        rated = next(m.spec.rated_kw for m in scenario.meters if m.id == target)
        return rated, "kW"
    return 0.0, ""


def build_loads(scenario: Scenario, placed: list[Placed]) -> dict[str, Load]:
    """Each meter's load with its anomalies injected and its site's yearly change; a main meter also
    carries its site's sub-meters."""
    injections: dict[str, list[Injection]] = defaultdict(list)
    for p in placed:
        if p.kind in LOAD_EFFECTS:
            extra = p.magnitude * 1000 if p.spec.magnitude_kw is not None else 0.0
            injections[p.target].append(Injection(p.kind, p.start, p.end, extra))
    since_ms = int(instants(datetime.combine(scenario.start, time(), VIETNAM_TZ))[0])
    own: dict[str, Load | None] = {}
    for meter in scenario.meters:
        base = _base_load(scenario.seed, meter)
        if base is not None and injections[meter.id]:
            base = Injected(base, tuple(injections[meter.id]), meter.id)
        if base is not None and meter.site.yearly_change:
            base = Trend(base, meter.site.yearly_change, since_ms)
        own[meter.id] = base
    loads: dict[str, Load] = {}
    for meter in scenario.meters:
        load = own[meter.id]
        if meter.spec.role == "main":
            children = tuple(
                child
                for m in scenario.meters
                if m.site_id == meter.site_id and m.spec.role == "sub" and (child := own[m.id]) is not None
            )
            loads[meter.id] = MainMeter(load, children, meter.spec.losses)
        else:
            assert load is not None, "only a main meter may be a feeder"
            loads[meter.id] = load
    return loads


VALUE_FAULTS = frozenset({AnomalyKind.COUNTER_RESET, AnomalyKind.METER_REPLACEMENT, AnomalyKind.FROZEN})
"""Faults in what a meter shows, rather than in how (or whether) it answers."""


def simulated_meter(
    scenario: Scenario, meter: ExpandedMeter, load: Load, epoch: datetime, update_interval: float
) -> SimulatedMeter:
    """The register state of `meter`, keyed the same way by `generate` and `serve` so both show one meter."""
    return SimulatedMeter(
        load, key=f"{scenario.seed}/{meter.id}", supply=f"{scenario.seed}/{meter.site_id}",
        epoch=epoch, update_interval=update_interval, resolution=meter.spec.resolution,
    )  # fmt: skip


class FaultyMeter:
    """A simulated meter with the value faults placed on it: a counter reset or a replacement meter takes
    effect once, when time first reaches its start (a poll that skipped the window still sees it); a frozen
    meter shows, throughout the window, what it showed at its first read inside it."""

    def __init__(self, meter: SimulatedMeter, placed: Sequence[Placed]) -> None:
        self.meter = meter
        self._resets = sorted(
            (p for p in placed if p.kind in (AnomalyKind.COUNTER_RESET, AnomalyKind.METER_REPLACEMENT)),
            key=lambda p: p.start,
        )
        self._frozen = [p for p in placed if p.kind is AnomalyKind.FROZEN]
        self._held: dict[Placed, dict[str, float]] = {}

    @property
    def key(self) -> str:
        return self.meter.key

    def read(self, at: datetime) -> Mapping[str, float]:
        self._reset_until(at)
        values = self.meter.read(at)
        if not self._frozen:
            return values
        shown = self._hold(instants(at), {name: np.array([value]) for name, value in values.items()})
        return {name: float(column[0]) for name, column in shown.items()}

    def upcoming(self, stop: int, *, phasors: bool = True) -> Values:
        """:meth:`SimulatedMeter.upcoming` with the faults: what polls at each window's start show."""
        pieces = []
        while self._resets and (due := self.meter.tick(self._resets[0].start)) < stop:
            # the window the reset falls in still shows the old counters
            pieces.append(self.meter.upcoming(due + 1, phasors=phasors))
            self._reset_until(self._resets[0].start)
        pieces.append(self.meter.upcoming(stop, phasors=phasors))
        values = (
            pieces[0] if len(pieces) == 1 else {n: np.concatenate([p[n] for p in pieces]) for n in pieces[0]}
        )
        return self._hold(self.meter.window_ms(np.arange(stop - len(values["frequency_hz"]), stop)), values)

    def _reset_until(self, at: datetime) -> None:
        while self._resets and self._resets[0].start <= at:
            reset = self._resets.pop(0)
            self.meter.read(reset.start)  # integrate up to the reset, which the next window then shows
            fresh = 0.0 if reset.kind is AnomalyKind.COUNTER_RESET else 5 * uniform("new-meter", self.key)
            self.meter.reset_counters(fresh)

    def _hold(self, ms: Times, values: Values) -> Values:
        """`values` read at `ms`, frozen where a frozen window holds what its first read showed."""
        for frozen in reversed(self._frozen):  # the first listed wins where windows overlap
            start, end = instants(frozen.start, frozen.end)
            inside = np.flatnonzero((ms >= start) & (ms < end))
            if len(inside):
                held = self._held.setdefault(frozen, {q: float(v[inside[0]]) for q, v in values.items()})
                for name, column in values.items():
                    column[inside] = held[name]
        return values
