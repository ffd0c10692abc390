"""Generated datasets: the MQTT contract's shape, deterministic bytes, and labels the data bear out."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from kilowatch.mqtt_contract import ReadingsBatch
from sim.anomalies import AnomalyKind
from sim.cli import app
from sim.generate import Run, npz_batches, write_dataset
from sim.live import scenario_buses
from sim.scenario import load_scenario

INTERVAL_S = 300


def office_run() -> Run:
    """Ten days: two of the generator's week-long arrays, every kind of fault on one gateway."""
    return Run(load_scenario("office-lang-son"), start=date(2025, 6, 2), days=10, interval_s=INTERVAL_S)


@pytest.fixture(scope="module")
def office_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("office")
    write_dataset(office_run(), out)
    return out


def batches(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(out.glob("readings/*/*.jsonl")) for line in path.open()]


def series(out: Path) -> dict[str, list[dict[str, Any]]]:
    by_meter: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for batch in batches(out):
        for reading in batch["readings"]:
            by_meter[reading["meter"]].append(reading)
    return by_meter


def labels(out: Path, kind: str) -> list[dict[str, Any]]:
    return [
        label for label in json.loads((out / "labels.json").read_text())["labels"] if label["kind"] == kind
    ]


def power(readings: list[dict[str, Any]], start_ms: int, end_ms: int) -> list[float]:
    return [r["values"]["active_power_w"] for r in readings if start_ms <= r["ts"] < end_ms and r["values"]]


def test_batches_follow_the_contract_with_consecutive_seq(office_dataset: Path) -> None:
    found = batches(office_dataset)
    assert [b["seq"] for b in found] == list(range(len(found)))
    for batch in found[:: len(found) // 50]:
        ReadingsBatch.model_validate(batch)
    assert len(found) == 10 * 86_400 // INTERVAL_S  # a silent meter never silences the whole gateway


def test_the_same_seed_writes_the_same_bytes(office_dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["generate", "--scenario", "office-lang-son", "--days", "10", "--start", "2025-06-02",
              "--interval", str(INTERVAL_S), "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("labels.json", "readings/so-cong-thuong/gw-1.jsonl"):
        assert (tmp_path / name).read_bytes() == (office_dataset / name).read_bytes(), name


def test_after_hours_intervals_carry_the_extra_load(office_dataset: Path) -> None:
    by_meter = series(office_dataset)
    found = labels(office_dataset, "after_hours_waste")
    assert {label["meter"] for label in found} == {
        "so-cong-thuong.cooling",
        "so-cong-thuong.lights",
        "so-cong-thuong.main",
    }
    for label in found:
        inside = power(by_meter[label["meter"]], label["start_ms"], label["end_ms"])
        week_earlier = power(
            by_meter[label["meter"]], label["start_ms"] - 86_400_000, label["end_ms"] - 86_400_000
        )
        day_later = power(
            by_meter[label["meter"]], label["start_ms"] + 86_400_000, label["end_ms"] + 86_400_000
        )
        normal = min(sum(week_earlier) / len(week_earlier), sum(day_later) / len(day_later))
        assert sum(inside) / len(inside) - normal > 0.8 * label["magnitude"] * 1000, label


def test_blips_are_short_benign_and_visible(office_dataset: Path) -> None:
    series(office_dataset)
    blips = [label for label in labels(office_dataset, "blip") if not label["meter"].endswith(".main")]
    assert blips
    for label in blips:
        assert label["category"] == "benign"
        assert label["end_ms"] - label["start_ms"] <= 600_000


def test_faults_show_in_the_data_as_labelled(office_dataset: Path) -> None:
    by_meter = series(office_dataset)
    [silent] = labels(office_dataset, "silent")
    assert power(by_meter[silent["meter"]], silent["start_ms"], silent["end_ms"]) == []
    [exception] = labels(office_dataset, "exception")
    inside = [
        r for r in by_meter[exception["meter"]] if exception["start_ms"] <= r["ts"] < exception["end_ms"]
    ]
    assert inside
    assert all(r["quality"] == "error" and r["values"] == {} for r in inside)
    [frozen] = labels(office_dataset, "frozen")
    inside = [r for r in by_meter[frozen["meter"]] if frozen["start_ms"] <= r["ts"] < frozen["end_ms"]]
    assert len(inside) > 2
    assert all(r["values"] == inside[0]["values"] for r in inside)
    [reset] = labels(office_dataset, "counter_reset")
    counters = [r["values"]["energy_import_kwh"] for r in by_meter[reset["meter"]] if r["values"]]
    drops = [b for a, b in itertools.pairwise(counters) if b < a]
    assert len(drops) == 1
    assert drops[0] < 1.0
    [jump] = labels(office_dataset, "clock_jump")
    _site, gateway = jump["meter"].split("/")
    stamps = [r["ts"] for b in batches(office_dataset) if b["gateway"] == gateway for r in b["readings"]]
    steps = {b - a for a, b in itertools.pairwise(stamps) if b != a}
    assert jump["magnitude"] * 1000 + INTERVAL_S * 1000 in steps


def test_readings_are_electrically_consistent(office_dataset: Path) -> None:
    for reading in series(office_dataset)["so-cong-thuong.main"][::97]:
        v = reading["values"]
        if not v:
            continue
        p = v["active_power_w"]
        assert p == pytest.approx(sum(v[f"active_power_l{i}_w"] for i in (1, 2, 3)), rel=1e-3)
        assert v["apparent_power_va"] == pytest.approx(math.hypot(p, v["reactive_power_var"]), rel=1e-3)
        assert v["power_factor"] == pytest.approx(p / v["apparent_power_va"], abs=1e-3)


def test_main_meter_carries_its_sub_meters(office_dataset: Path) -> None:
    by_meter = series(office_dataset)
    subs = [by_meter[f"so-cong-thuong.{m}"] for m in ("cooling", "lights", "servers")]
    for i in range(0, len(by_meter["so-cong-thuong.main"]), 211):
        main = by_meter["so-cong-thuong.main"][i]
        same = [next((r for r in s if r["ts"] == main["ts"] and r["values"]), None) for s in subs]
        if main["values"] and all(same):
            children = sum(r["values"]["active_power_w"] for r in same if r)
            assert main["values"]["active_power_w"] > children


def test_street_lights_on_by_day_burn_in_daylight(tmp_path: Path) -> None:
    scenario = load_scenario("street-lighting")
    write_dataset(Run(scenario, start=scenario.start, days=6, interval_s=INTERVAL_S), tmp_path)
    by_meter = series(tmp_path)
    for label in labels(tmp_path, "lights_on_by_day"):
        inside = power(by_meter[label["meter"]], label["start_ms"], label["end_ms"])
        assert min(inside) > 0.5 * label["magnitude"] * 1000
        assert datetime.fromisoformat(label["start"]).hour + 1 >= 6
        assert datetime.fromisoformat(label["end"]).hour <= 16
    for label in labels(tmp_path, "lights_dark_at_night"):
        assert max(power(by_meter[label["meter"]], label["start_ms"], label["end_ms"])) < 100
    offsets = labels(tmp_path, "switch_offset")
    assert offsets
    assert all(label["category"] == "benign" for label in offsets)


def test_an_unknown_scenario_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstart: 2025-01-01\nsites: []\n")
    result = CliRunner().invoke(
        app, ["generate", "--scenario", str(bad), "--days", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "bad.yaml:3 sites" in result.output


def test_npz_holds_what_the_json_lines_hold(office_dataset: Path, tmp_path: Path) -> None:
    """Every batch, reading, status, fault and timestamp; values at float32 precision, counters exact."""
    write_dataset(office_run(), tmp_path / "a", fmt="npz")
    write_dataset(office_run(), tmp_path / "b", fmt="npz", jobs=2)
    jsonl = sorted(office_dataset.glob("readings/*/*.jsonl"))
    assert jsonl
    for path in jsonl:
        npz = path.relative_to(office_dataset).with_suffix(".npz")
        assert (tmp_path / "a" / npz).read_bytes() == (tmp_path / "b" / npz).read_bytes()  # whatever the jobs
        expected = [json.loads(line) for line in path.open()]
        found = list(npz_batches(tmp_path / "a" / npz))
        assert len(found) == len(expected)
        for got, want in zip(found, expected, strict=True):
            assert {k: v for k, v in got.items() if k != "readings"} == {
                k: v for k, v in want.items() if k != "readings"
            }
            for mine, theirs in zip(got["readings"], want["readings"], strict=True):
                assert {k: v for k, v in mine.items() if k != "values"} == {
                    k: v for k, v in theirs.items() if k != "values"
                }
                # float32, then both rounded to 4 decimals: a unit of the last decimal apart at most
                assert mine["values"] == pytest.approx(theirs["values"], rel=1e-6, abs=1.5e-4)
        ReadingsBatch.model_validate(found[0])
    assert (tmp_path / "a" / "labels.json").read_bytes() == (office_dataset / "labels.json").read_bytes()


def test_a_served_meter_shows_what_the_dataset_holds() -> None:
    """`serve` evaluates the windows since its last read, `generate` a week per array: the same numbers,
    counter resets and replacements included (frozen windows aside: a frozen meter holds what its first
    read inside showed, and these reads skip polls)."""
    run = office_run()
    frozen = [p for p in run.placed if p.kind is AnomalyKind.FROZEN]
    assert frozen
    served = {
        (bus.site, bus.gateway, bus.bus, unit_id): unit.meter
        for bus in scenario_buses(run.scenario, run.begin, run.days, INTERVAL_S)
        for unit_id, unit in bus.units.items()
    }
    for (site, gateway), meters in run.gateways.items():
        polls = list(run.polls(site, gateway))
        for j, meter in enumerate(meters):
            generated = {q: np.concatenate([p.values[j][q] for p in polls]) for q in run.quantities(meter)}
            serving = served[(site, gateway, meter.bus, meter.spec.unit)]
            for step in range(0, run.steps, 13):
                t = run.begin + step * run.interval
                if any(p.target == meter.id and p.start <= t < p.end for p in frozen):
                    continue
                shown = serving.read(t)
                assert {q: shown[q] for q in generated} == {q: v[step] for q, v in generated.items()}, (
                    meter.id,
                    t,
                )
