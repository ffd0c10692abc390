"""The evaluation's matching: which findings are true or false positives, which labels were missed."""

from __future__ import annotations

from datetime import date

from app.evaluation.evaluate import KIND_RULES, evaluate, scenario_sites, score
from collector.detectors.config import MeterConfig, Role
from collector.detectors.findings import Detector, Finding
from kilowatch.timebase import day_number
from sim.scenario import load_scenario

H = 3_600_000


def finding(meter: str, detector: Detector, rule: str, start_h: float, end_h: float | None) -> Finding:
    return Finding(
        site="s", meter=meter, detector=detector, rule=rule, start_ms=round(start_h * H),
        end_ms=None if end_h is None else round(end_h * H), detected_at=round(start_h * H) + H,
        message_en="x", message_vi="x",
    )  # fmt: skip


def label(meter: str, kind: str, category: str, start_h: float, end_h: float) -> dict[str, object]:
    return {"meter": meter, "kind": kind, "category": category, "start_ms": start_h * H, "end_ms": end_h * H}


def test_matching_counts_true_false_and_other_findings_and_missed_labels() -> None:
    configs = {
        "s.cooling": MeterConfig(role=Role.SUB_METER, rated_kw=60),
        "s.press": MeterConfig(role=Role.MACHINE, rated_kw=150, large=True),
        "s.main": MeterConfig(role=Role.OFFICE_MAIN, rated_kw=15),
    }
    labels = [
        label("s.cooling", "after_hours_waste", "anomaly", 18, 23),
        label("s.main", "after_hours_waste", "anomaly", 18, 23),  # the cooling's waste: its finding counts
        label("s.main", "after_hours_waste", "anomaly", 50, 55),  # missed
        label("s.press", "after_hours_waste", "anomaly", 18, 23),  # not judged by R4 (a machine)
        label("s.cooling", "overtime", "benign", 40, 42),
        label("s.press", "machine_peak_loaded", "anomaly", 65, 66),
        label("s.main", "idle_equipment", "anomaly", 80, 81),  # idle is not judged on a main meter
    ]
    findings = [
        finding("s.cooling", Detector.AFTER_HOURS, "R4", 22, 23),  # true positive, 4 h late
        finding("s.cooling", Detector.AFTER_HOURS, "R4", 41, None),  # overtime: false positive
        finding("s.press", Detector.PEAK, "overuse", 65, 66),  # another anomaly: "other"
        finding("s.press", Detector.PEAK, "large_machine_in_peak", 65, 65.5),
        finding("s.main", Detector.DATA_QUALITY, "no_data", 100, None),  # after the data: not scored
    ]
    site_of = dict.fromkeys(configs, "s")
    scores = score(findings, labels, configs, span=(0, 100 * H), site_of=site_of)
    r4 = scores[KIND_RULES["after_hours_waste"]]
    assert (r4.true_positives, r4.false_positives, r4.labels, r4.found) == (1, 1, 3, 2)
    assert r4.not_applicable == 1
    assert (r4.precision, round(r4.recall or 0, 3), r4.median_delay_min) == (0.5, 0.667, 300.0)
    assert scores[KIND_RULES["silent"]].false_positives == 0
    overuse = scores[KIND_RULES["peak_overuse"]]
    assert (overuse.true_positives, overuse.false_positives, overuse.other) == (0, 0, 1)
    loaded = scores[KIND_RULES["machine_peak_loaded"]]
    assert (loaded.true_positives, loaded.found, loaded.f1) == (1, 1, 1.0)
    assert scores[KIND_RULES["idle_equipment"]].not_applicable == 1


def test_a_short_generated_scenario_is_scored_consistently() -> None:
    evaluation = evaluate(load_scenario("street-lighting"), days=2)
    assert evaluation.findings, "day 1 has lights burning by day"
    for (detector, rule), s in evaluation.scores.items():
        judged = [f for f in evaluation.findings if (f.detector, f.rule) == (detector, rule)]
        assert s.true_positives + s.false_positives + s.other == len(judged)
        assert s.found <= s.labels
    lit = evaluation.scores[KIND_RULES["lights_on_by_day"]]
    assert lit.labels == 1
    assert lit.found == 1
    assert lit.true_positives >= 1


def test_a_holiday_morning_the_site_works_is_declared_a_working_day() -> None:
    """The simulated department works 2/9 (National Day) morning; the settings it would have say so, and
    the day is occupied, not after hours; 1/9 stays closed."""
    calendar = scenario_sites(load_scenario("office-lang-son"), 60).sites["so-cong-thuong"].calendar
    assert calendar.working_days == (date(2025, 9, 2),)
    assert calendar.occupied_slots(day_number(date(2025, 9, 2)))
    assert not calendar.occupied_slots(day_number(date(2025, 9, 1)))
