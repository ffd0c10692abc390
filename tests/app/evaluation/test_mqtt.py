"""`kilowatch eval` through the real path: simulator -> Mosquitto -> collector process -> alerts, scored.

The alerts a real collector raises from a published scenario score the same as the detectors run in
process on the same data: nothing is lost or invented between the simulator and the alert store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from app.evaluation.evaluate import KIND_RULES, Rule, Score, evaluate
from app.evaluation.mqtt import evaluate_via_mqtt
from sim.scenario import load_scenario

DAYS = 4


def test_the_alerts_of_a_real_collector_score_as_the_detectors_in_process(tmp_path: Path) -> None:
    spec = load_scenario("office-lang-son")
    said: list[str] = []
    published: list[int] = []
    stored: list[int] = []
    through_mqtt = asyncio.run(
        evaluate_via_mqtt(
            spec,
            days=DAYS,
            workdir=tmp_path,
            say=said.append,
            progress=published.append,
            stored=stored.append,
        )
    )
    in_process = evaluate(spec, days=DAYS)
    assert through_mqtt.path.startswith("MQTT")
    batches = (DAYS + 14) * 1440  # one gateway, a batch a minute, the warm-up included
    assert any(line.startswith(f"published  {batches:,} batches") for line in said)
    assert sum(published) == sum(stored) == batches

    def table(scores: dict[Rule, Score]) -> dict[Rule, tuple[int, int, int, int, int]]:
        return {
            rule: (s.labels, s.found, s.true_positives, s.false_positives, s.other)
            for rule, s in scores.items()
        }

    assert table(through_mqtt.scores) == table(in_process.scores)
    r4 = through_mqtt.scores[KIND_RULES["after_hours_waste"]]
    assert (r4.labels, r4.found, r4.false_positives) == (4, 4, 0)
    assert (tmp_path / "collector.log").exists()


def test_eval_without_a_broker_to_reach_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--scenario",
            "office-lang-son",
            "--days",
            "1",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--workdir",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0
    assert "cannot reach the broker mqtt://127.0.0.1:1" in result.output
