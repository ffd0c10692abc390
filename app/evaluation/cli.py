"""``kilowatch eval``: its options only, so that starting any ``kilowatch`` command does not load the
detectors, the calendars (holidays, astral) and the simulator; :mod:`app.evaluation.evaluate` and
:mod:`app.evaluation.mqtt` do the work."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kilowatch import yamlconfig
from kilowatch.cli_support import EXIT_CONFIG, fail

if TYPE_CHECKING:
    from datetime import date

    from app.evaluation.evaluate import Evaluation
    from sim.scenario import Scenario


class EvalPath(StrEnum):
    MQTT = "mqtt"
    IN_PROCESS = "in-process"


def eval_command(
    scenario: Annotated[str, typer.Option(help="A shipped scenario's name or a scenario file.")],
    days: Annotated[int, typer.Option(min=1, help="Days of data to generate and judge.")] = 14,
    start: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First local day (default: the scenario's).")
    ] = None,
    interval: Annotated[int, typer.Option(min=1, help="Seconds between poll cycles.")] = 60,
    warmup: Annotated[
        int,
        typer.Option(min=0, help="Days of history before the labelled days, for the detectors' baselines."),
    ] = 14,
    path: Annotated[
        EvalPath,
        typer.Option(
            help="mqtt: publish to a broker, a real collector process ingests and raises alerts, the alerts "
            "are scored; in-process: the detectors run here on the generated files (faster)."
        ),
    ] = EvalPath.MQTT,
    broker: Annotated[
        str | None,
        typer.Option(help="mqtt://HOST:PORT of a broker to use (default: a private Mosquitto on loopback)."),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Keep the collector's ledger, configs and logs here (default: a temporary folder)."
        ),
    ] = None,
) -> None:
    """Score the detectors on a labelled simulator scenario: precision, recall, F1 and delay per rule."""
    from app.evaluation.evaluate import evaluate, render
    from sim.scenario import load_scenario

    try:
        chosen = load_scenario(scenario)
    except yamlconfig.ConfigError as exc:
        fail("\n".join(exc.problems), EXIT_CONFIG)
    first = start.date() if start else None
    if path is EvalPath.IN_PROCESS:
        render(evaluate(chosen, days=days, start=first, interval_s=interval, warmup_days=warmup))
        return
    render(_through_mqtt(chosen, days, first, interval, warmup, broker, workdir))


def _through_mqtt(
    scenario: Scenario,
    days: int,
    start: date | None,
    interval: int,
    warmup: int,
    broker: str | None,
    workdir: Path | None,
) -> Evaluation:
    from rich.progress import Progress

    from app.evaluation.mqtt import EvalError, evaluate_via_mqtt
    from app.processes import Children

    folder = workdir or Path(tempfile.mkdtemp(prefix="kilowatch-eval-"))
    folder.mkdir(parents=True, exist_ok=True)
    gateways = len({(m.site_id, m.gateway) for m in scenario.meters})
    with Progress(transient=True) as bar:
        batches = gateways * ((warmup + days) * 86_400 // interval)
        task = bar.add_task("published", total=batches)
        kept = bar.add_task("stored by the collector", total=batches)
        Children.stopped_on_sigterm()
        try:
            evaluation = asyncio.run(
                evaluate_via_mqtt(
                    scenario, days=days, workdir=folder, start=start, interval_s=interval, warmup_days=warmup, broker=broker,
                    say=bar.console.print, progress=lambda n: bar.advance(task, n),
                    stored=lambda n: bar.advance(kept, n),
                )
            )  # fmt: skip
        except (EvalError, ValueError) as exc:
            fail(f"eval failed: {exc}")
    if workdir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return evaluation
