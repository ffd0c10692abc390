"""``kilowatch eval``: its options only, so that starting any ``kilowatch`` command does not load the
detectors, the calendars (holidays, astral) and the simulator; :mod:`collector.evaluate` does the work."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from kilowatch import yamlconfig
from kilowatch.cli_support import EXIT_CONFIG, fail


def eval_command(
    scenario: Annotated[str, typer.Option(help="A shipped scenario's name or a scenario file.")],
    days: Annotated[int, typer.Option(min=1, help="Days of data to generate and judge.")] = 14,
    start: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First local day (default: the scenario's).")
    ] = None,
    interval: Annotated[int, typer.Option(min=1, help="Seconds between poll cycles.")] = 60,
) -> None:
    """Score the detectors on a labelled simulator scenario: precision, recall, F1 and delay per rule."""
    from collector.evaluate import evaluate, render
    from sim.scenario import load_scenario

    try:
        chosen = load_scenario(scenario)
    except yamlconfig.ConfigError as exc:
        fail("\n".join(exc.problems), EXIT_CONFIG)
    render(evaluate(chosen, days=days, start=start.date() if start else None, interval_s=interval))
