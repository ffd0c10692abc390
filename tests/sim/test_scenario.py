"""Scenario files: the shipped ones validate; bad ones are refused naming file, line, key and problem."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from kilowatch.yamlconfig import ConfigError
from sim.deployment import PEAK_BAND_KINDS, SUNDAY, place
from sim.scenario import SCENARIO_DIR, load_scenario

GOOD = """\
name: tiny
seed: 3
start: 2025-06-02
sites:
  - id: office
    kind: office
    gateways:
      - id: gw
        buses:
          - id: bus
            meters:
              - {id: main, profile: eastron-sdm630, unit: 1, model: office, role: main, rated_kw: 10}
              - {id: ac, profile: eastron-sdm630, unit: 2, model: office, rated_kw: 20, parts: [cooling]}
anomalies:
  - {kind: after_hours_waste, meter: office.ac, day: 0, window: {from: "19:00", to: "22:00"}, magnitude_kw: 5}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def test_the_shipped_scenarios_validate() -> None:
    shipped = [path.stem for path in SCENARIO_DIR.glob("*.yaml")]
    assert set(shipped) >= {
        "office-lang-son",
        "street-lighting",
        "factory-two-shifts",
        "mixed-province",
    }
    sizes = {name: len(load_scenario(name).meters) for name in shipped}
    assert sizes["mixed-province"] >= 200
    assert len({m.site_id for m in load_scenario("mixed-province").meters}) > 50


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("profile: eastron-sdm630, unit: 1", "profile: acme-9000, unit: 1",
         "scenario.yaml:12 sites[0].gateways[0].buses[0].meters[0].profile: 'acme-9000': Value error, unknown profile 'acme-9000'"),
        ("unit: 2", "unit: 1", "scenario.yaml:11 sites[0].gateways[0].buses[0].meters: Value error, meters 'main' and 'ac' share unit 1"),
        ("rated_kw: 20", "rated_kw: -20", "meters[1].rated_kw: -20: Input should be greater than 0"),
        ('to: "22:00"', 'to: "18:00"', "anomalies[0].window: Value error, the window ends (18:00:00) before it starts (19:00:00)"),
        ("meter: office.ac", "meter: office.fridge", "no meter 'office.fridge'"),
        ("kind: after_hours_waste", "kind: lights_on_by_day", "lights_on_by_day takes no magnitude_kw"),
        ("kind: after_hours_waste", "kind: blip", "blip lasts at most 10 min, this one 180"),
        ("magnitude_kw: 5", "seconds: 5", "after_hours_waste needs magnitude_kw"),
        ("kind: office\n", "kind: office\n    colour: red\n", "sites[0].colour: extra inputs are not permitted"),
        ("meter: office.ac,", "meter: office.ac, sites: [office],", "sites narrows where count places an anomaly: give count with it"),
        ("meter: office.ac,", "count: 1, sites: [plant],", "anomalies[0].sites: no site 'plant'"),
        ("kind: office\n", "kind: office\n    schedule: {office: {holidays_worked: [2025-04-30, 2025-06-03]}}\n",
         "sites[0].schedule.office.holidays_worked: Value error, not Vietnamese public holidays: 2025-06-03"),
    ],
)  # fmt: skip
def test_a_bad_scenario_is_refused_naming_file_key_and_problem(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as refused:
        load_scenario(write(tmp_path, GOOD.replace(old, new, 1)))
    assert message in "\n".join(refused.value.problems)


def test_a_good_scenario_loads_with_site_prefixed_meter_ids(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD))
    assert [m.id for m in scenario.meters] == ["office.main", "office.ac"]
    repeated = load_scenario(write(tmp_path, GOOD.replace("kind: office\n", "kind: office\n    count: 3\n", 1)
                                   .replace("meter: office.ac", "meter: office-02.ac")))  # fmt: skip
    assert [m.id for m in repeated.meters][:3] == ["office-01.main", "office-01.ac", "office-02.main"]


def test_peak_band_anomalies_are_never_placed_on_a_sunday() -> None:
    """Sunday has no peak band: an overuse placed there could be neither seen nor scored."""
    scenario = load_scenario("mixed-province")
    placed = place(scenario, date(2026, 5, 4), 28)
    in_peak = [p for p in placed if p.kind in PEAK_BAND_KINDS]
    assert len(in_peak) >= 5
    assert all(p.start.weekday() != SUNDAY for p in in_peak)


def test_count_with_sites_places_only_on_their_meters() -> None:
    """mixed-province's 5 kW peak overuse lands on commune offices only, its 30 kW one on plants only."""
    scenario = load_scenario("mixed-province")
    site_of = {m.id: m.site.id for m in scenario.meters}
    overuse = [p for p in place(scenario, scenario.start, 28) if p.kind.value == "peak_overuse"]
    assert {(site_of[p.target], p.magnitude) for p in overuse} == {("ubnd-xa", 5.0), ("xuong", 30.0)}
