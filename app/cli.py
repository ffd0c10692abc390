"""The `kilowatch` command: one entry point, one sub-command group per part of the product.

Each part's module is imported when that part is invoked (or when help lists it), so a command loads only
its own part: `kilowatch agent run` finds its command without the collector's, the simulator's or the demo's
modules (tests/system/test_packaging.py checks it), then execs the agent's runtime alone (``python -m
agent``, see agent/__main__.py). Each group's module also imports its heavy
dependencies inside the commands, so a gateway with only the `agent` extra installed can run
`kilowatch agent ...` without FastAPI or InfluxDB libraries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import typer
import typer.main
from typer._click.core import Command  # typer 0.29 vendors click: its parser is what runs
from typer.core import TyperGroup


def _agent(root: typer.Typer) -> None:
    from agent.cli import app

    root.add_typer(app, name="agent", help="Read meters and publish readings (runs on the gateway).")


def _collector(root: typer.Typer) -> None:
    from app.provision_cli import broker_setup, provision_gateway, revoke_gateway
    from collector.cli import app

    app.command("provision-gateway")(provision_gateway)  # in app/: they need the agent's config model
    app.command("revoke-gateway")(revoke_gateway)
    app.command("broker-setup")(broker_setup)
    root.add_typer(app, name="collector", help="Ingest readings, store them and serve the API.")


def _sim(root: typer.Typer) -> None:
    from sim.cli import app

    root.add_typer(app, name="sim", help="Simulated Modbus meters for tests and demos.")


def _profiles(root: typer.Typer) -> None:
    from kilowatch.profiles_cli import app

    root.add_typer(app, name="profiles", help="List, show and check device profiles.")


def _demo(root: typer.Typer) -> None:
    from app.demo import demo

    root.command()(demo)


def _schemas(root: typer.Typer) -> None:
    from app.schemas_cli import schemas

    root.command()(schemas)


def _eval(root: typer.Typer) -> None:
    from app.evaluation.cli import eval_command

    root.command(name="eval")(eval_command)


PARTS: dict[str, Callable[[typer.Typer], None]] = {
    "demo": _demo,
    "schemas": _schemas,
    "eval": _eval,
    "agent": _agent,
    "collector": _collector,
    "sim": _sim,
    "profiles": _profiles,
}
"""Each sub-command by name, and what registers it on a Typer (importing its module)."""


@functools.cache
def _command(name: str) -> Command:
    """Sub-command `name`, built once (the collector's group gains app/'s commands once) exactly as typer
    builds a sub-command registered on the root."""
    holder = typer.Typer()
    PARTS[name](holder)
    return typer.main.get_group(holder).commands[name]


class _Commands(Mapping[str, Command]):
    """The sub-commands, each imported on first access; their names alone (typo suggestions) import none."""

    def __getitem__(self, name: str) -> Command:
        if name not in PARTS:
            raise KeyError(name)
        return _command(name)

    def __iter__(self) -> Iterator[str]:
        return iter(PARTS)

    def __len__(self) -> int:
        return len(PARTS)


class Parts(TyperGroup):
    """The root group, whose sub-commands come from :data:`PARTS` when first looked up."""

    def __init__(self, **attrs: Any) -> None:  # typer passes TyperGroup's keyword arguments
        super().__init__(**attrs)
        self.commands = _Commands()  # type: ignore[assignment]  # read-only: nothing adds to the root


app = typer.Typer(name="kilowatch", cls=Parts, no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def kilowatch() -> None:
    """Edge metering agent and central collector that find electricity waste."""
