"""`kilowatch eval`: run the detectors over a labelled simulator scenario and score them against the truth.

The scenario's dataset is generated into a temporary directory, read back the way the collector
receives it (each gateway's batches in publication order), judged per meter with settings derived from
the scenario (the configuration its sites would have), and every finding is matched with the labels:

- a finding that overlaps a label of a kind its rule detects, on its meter, is a true positive;
- a finding that overlaps only benign labels, or nothing, is a false positive;
- a finding overlapping only another anomaly or fault is counted apart ("other": e.g. a press loaded in
  the peak band is also peak overuse), neither right nor wrong;
- a label no finding of its rule overlaps is a false negative. Labels on meters a rule does not judge
  (idle equipment copied onto a plant's main meter) are counted as not applicable;
- waste on a sub-meter also flows through its site's main meter, so the simulator labels both: the main
  meter's twin (same kind and window) is found by a finding on either, since one alert about the waste is
  what the facility manager needs (a small circuit's waste can be lost in a whole building's load);
- the data begin `warmup_days` before the labelled span, as a site has history before anyone judges it;
  findings that end before the span, or start at or after its end (a meter "silent" since the data
  ended), are not about it and are not scored.

:func:`evaluate` runs the detectors in this process on the generated files; :mod:`app.evaluation.mqtt`
sends the same dataset through a broker into a real collector and scores the alerts it raised.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any, Protocol

from collector.calendars import Coordinates, LightingWindow, SiteCalendar
from collector.detectors.common import Context
from collector.detectors.config import MeterConfig, Role, SiteConfig, Sites
from collector.detectors.data_quality import untrusted_clock
from collector.detectors.dataset import read_dataset
from collector.detectors.findings import Detector, Finding
from collector.detectors.run import DETECTORS_BY_ROLE, detect_meter
from kilowatch.calendars import MONDAY_TO_FRIDAY, MONDAY_TO_SATURDAY, WeeklyHours, window
from kilowatch.timebase import day_number, day_start_ms
from sim.scenario import ExpandedMeter, Scenario, SiteSpec

Rule = tuple[Detector, str]

KIND_RULES: dict[str, Rule] = {
    "after_hours_waste": (Detector.AFTER_HOURS, "R4"),
    "idle_equipment": (Detector.IDLE, "R10"),
    "peak_overuse": (Detector.PEAK, "overuse"),
    "machine_peak_loaded": (Detector.PEAK, "large_machine_in_peak"),
    "lights_on_by_day": (Detector.LIGHTING, "on_by_day"),
    "lights_dark_at_night": (Detector.LIGHTING, "dark_at_night"),
    "ad_not_cut": (Detector.ADVERTISING, "R7"),
    "silent": (Detector.DATA_QUALITY, "no_data"),
    "exception": (Detector.DATA_QUALITY, "no_data"),
    "frozen": (Detector.DATA_QUALITY, "frozen"),
    "counter_reset": (Detector.DATA_QUALITY, "counter_reset"),
    "meter_replacement": (Detector.DATA_QUALITY, "counter_reset"),
    "clock_jump": (Detector.DATA_QUALITY, "untrusted_clock"),
}
"""Which detector rule is expected to find each labelled kind: the one place the mapping is written.
Not here, so not scored: `blip` (benign), `crc` and `slow` (a noisy or slow line loses or delays some
polls; no finding is owed)."""


def _hours(t: time) -> str:
    return t.strftime("%H:%M")


def site_config(site: SiteSpec, meters: Iterable[ExpandedMeter], poll_s: float) -> SiteConfig:
    """The settings a site of the scenario would be configured with."""
    schedule = site.schedule
    if site.kind == "factory":
        days = MONDAY_TO_SATURDAY if schedule.shifts.saturday else MONDAY_TO_FRIDAY
        occupancy = WeeklyHours(
            days=days, windows=tuple(window(_hours(w.start), _hours(w.end)) for w in schedule.shifts.shifts)
        )
    else:
        occupancy = WeeklyHours(
            windows=tuple(window(_hours(w.start), _hours(w.end)) for w in schedule.office.hours)
        )
    lighting = schedule.lighting
    permitted: WeeklyHours = SiteCalendar.model_fields["permitted"].default
    if site.kind == "office" and schedule.office.saturday_work > 0:
        # A site that works Saturday mornings with permission declares them; overtime it need not.
        permitted = WeeklyHours(
            days=MONDAY_TO_SATURDAY, windows=(*permitted.windows, window("07:00", "12:00"))
        )
    calendar = SiteCalendar(
        occupancy=occupancy,
        permitted=permitted,
        working_days=tuple(schedule.office.holidays_worked),  # declared, as a site working a holiday does
        coordinates=Coordinates(lat=site.coordinates.lat, lon=site.coordinates.lon),
        lighting=LightingWindow(
            mode="fixed" if lighting.mode == "fixed" else "astronomical",
            on_at=lighting.on_at,
            off_at=lighting.off_at,
        ),
    )
    roles = {
        "lighting_cabinet": Role.LIGHTING_CABINET,
        "advertising": Role.ADVERTISING,
        "machine": Role.MACHINE,
    }
    configs = {
        m.id: MeterConfig(
            role=roles.get(m.spec.model, Role.OFFICE_MAIN if m.spec.role == "main" else Role.SUB_METER),
            rated_kw=m.spec.rated_kw,
            large=m.spec.large,
        )
        for m in meters
    }
    return SiteConfig(calendar=calendar, poll_s=poll_s, meters=configs)


def scenario_sites(scenario: Scenario, poll_s: float) -> Sites:
    """The detection settings file the scenario's sites would have (every meter configured)."""
    sites = {}
    for site_id in dict.fromkeys(m.site_id for m in scenario.meters):
        meters = [m for m in scenario.meters if m.site_id == site_id]
        sites[site_id] = site_config(meters[0].site, meters, poll_s)
    return Sites(sites=sites)


def applies(rule: Rule, config: MeterConfig | None) -> bool:
    """Whether `rule` judges a meter so configured (None: a gateway, judged on its clock only)."""
    if config is None:
        return rule == (Detector.DATA_QUALITY, "untrusted_clock")
    if rule == (Detector.PEAK, "large_machine_in_peak") and not config.large:
        return False
    return rule[0] in DETECTORS_BY_ROLE[config.role]


@dataclass
class Score:
    rule: Rule
    true_positives: int = 0
    false_positives: int = 0
    other: int = 0
    labels: int = 0
    found: int = 0
    not_applicable: int = 0
    delays_min: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else None

    @property
    def recall(self) -> float | None:
        return self.found / self.labels if self.labels else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and r is not None and p + r else None

    @property
    def median_delay_min(self) -> float | None:
        return statistics.median(self.delays_min) if self.delays_min else None


class Scored(Protocol):
    """What scoring needs of a finding, or of an alert the collector raised."""

    @property
    def meter(self) -> str: ...
    @property
    def detector(self) -> Detector: ...
    @property
    def rule(self) -> str: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int | None: ...
    @property
    def detected_at(self) -> int: ...


def score(
    findings: Sequence[Scored],
    labels: list[dict[str, Any]],
    configs: Mapping[str, MeterConfig],
    span: tuple[int, int],
    site_of: Mapping[str, str],
) -> dict[Rule, Score]:
    """Per rule: findings matched with labels as the module docstring says, over the labelled `span`
    [from, to) ms: findings wholly outside it are not scored."""
    begin_ms, end_ms = span
    scores = {rule: Score(rule) for rule in dict.fromkeys(KIND_RULES.values())}
    by_meter: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for label in labels:
        by_meter[label["meter"]].append(label)

    def overlaps(f: Scored, label: dict[str, Any]) -> bool:
        return bool(f.start_ms < label["end_ms"] and label["start_ms"] < (f.end_ms or end_ms))

    findings = [f for f in findings if f.start_ms < end_ms and (f.end_ms is None or f.end_ms > begin_ms)]
    twins: dict[tuple[str, str, int, int], set[str]] = defaultdict(set)
    for label in labels:
        twins[(site_of.get(label["meter"], ""), label["kind"], label["start_ms"], label["end_ms"])].add(
            label["meter"]
        )

    def finders(label: dict[str, Any]) -> set[str]:
        """Its own meter, plus, on a main meter, the site's sub-meters carrying the same labelled waste."""
        config = configs.get(label["meter"])
        if config is None or config.role is not Role.OFFICE_MAIN:
            return {label["meter"]}
        return twins[(site_of.get(label["meter"], ""), label["kind"], label["start_ms"], label["end_ms"])]

    for f in findings:
        judged = (f.detector, f.rule)
        hits = [label for label in by_meter[f.meter] if overlaps(f, label)]
        if any(KIND_RULES.get(label["kind"]) == judged for label in hits):
            scores[judged].true_positives += 1
        elif any(label["category"] != "benign" for label in hits):
            scores[judged].other += 1
        else:
            scores[judged].false_positives += 1
    for label in labels:
        rule = KIND_RULES.get(label["kind"])
        if rule is None:
            continue
        s = scores[rule]
        if not applies(rule, configs.get(label["meter"])):
            s.not_applicable += 1
            continue
        s.labels += 1
        who = finders(label)
        matched = [
            f for f in findings if f.meter in who and (f.detector, f.rule) == rule and overlaps(f, label)
        ]
        if matched:
            s.found += 1
            s.delays_min.append((min(f.detected_at for f in matched) - label["start_ms"]) / 60_000)
    return scores


@dataclass
class Evaluation:
    scenario: str
    days: int
    findings: Sequence[Scored]
    labels: list[dict[str, Any]]
    scores: dict[Rule, Score]
    path: str = "in-process"
    meters: int = 0
    """Meters of the scenario, for the false alerts per meter-month."""

    def false_per_meter_month(self, false_positives: int) -> float | None:
        """`false_positives` per meter and 30 days judged (the goal: at most 1)."""
        meter_months = self.meters * self.days / 30
        return false_positives / meter_months if meter_months else None


WARMUP_DAYS = 14
"""Days of history an evaluation feeds the detectors before the labelled span (nothing placed or
scored there): a site has history before anyone judges it, and baselines (after-hours: 28 trailing
days, peak overuse: the same weekdays before) need some."""


def evaluate(
    scenario: Scenario,
    *,
    days: int,
    start: date | None = None,
    interval_s: int = 60,
    warmup_days: int = WARMUP_DAYS,
) -> Evaluation:
    """Generate `scenario` for `days` after `warmup_days`, detect, and score against its labels."""
    from sim.generate import Run, write_dataset

    run = Run(
        scenario, start=start or scenario.start, days=days, interval_s=interval_s, warmup_days=warmup_days
    )
    with tempfile.TemporaryDirectory(prefix="kilowatch-eval-") as tmp:
        root = Path(tmp)
        write_dataset(run, root)
        labels = json.loads((root / "labels.json").read_text(encoding="utf-8"))["labels"]
        begin = day_start_ms(day_number(run.start) - warmup_days)
        end = day_start_ms(day_number(run.start) + days)
        series, gateways = read_dataset(root, interval_s * 1000, begin, end)
    sites = scenario_sites(scenario, interval_s).sites
    configs = {meter: config for s in sites.values() for meter, config in s.meters.items()}
    findings: list[Finding] = []
    for m in scenario.meters:
        if m.id in series:
            ctx = Context(m.site_id, m.id, configs[m.id], sites[m.site_id])
            findings += detect_meter(ctx, series[m.id])
    for gw in gateways:
        if gw.untrusted:
            site = sites[gw.site]
            anyone = next(iter(site.meters.values()))
            findings += untrusted_clock(
                Context(gw.site, f"{gw.site}/{gw.gateway}", anyone, site), gw.untrusted
            )
    site_of = {m.id: m.site_id for m in scenario.meters}
    scores = score(findings, labels, configs, (day_start_ms(day_number(run.start)), end), site_of)
    return Evaluation(scenario.name, days, findings, labels, scores, meters=len(scenario.meters))


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def render(evaluation: Evaluation) -> None:
    from rich.console import Console
    from rich.table import Table

    false = sum(s.false_positives for s in evaluation.scores.values())
    title = (
        f"{evaluation.scenario}, {evaluation.days} days, {evaluation.path}: {len(evaluation.findings)} findings, "
        f"{_fmt(evaluation.false_per_meter_month(false), '.3f')} false alerts per meter-month ({evaluation.meters} meters)"
    )
    table = Table(title=title)
    for column in (
        "detector",
        "rule",
        "labels",
        "found",
        "TP",
        "FP",
        "other",
        "n/a",
        "precision",
        "recall",
        "F1",
    ):
        table.add_column(column, justify="left" if column in ("detector", "rule") else "right")
    table.add_column("median delay (min)", justify="right")
    table.add_column("FP/meter-month", justify="right")
    for (detector, rule), s in evaluation.scores.items():
        table.add_row(
            detector.value, rule, str(s.labels), str(s.found), str(s.true_positives), str(s.false_positives),
            str(s.other), str(s.not_applicable), _fmt(s.precision), _fmt(s.recall), _fmt(s.f1),
            _fmt(s.median_delay_min, ".0f"), _fmt(evaluation.false_per_meter_month(s.false_positives), ".3f"),
        )  # fmt: skip
    Console(width=150).print(table)
