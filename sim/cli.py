"""`kilowatch sim`: serve simulated meters for tests, demos and trying the agent without hardware."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar, cast

import typer

from kilowatch.cli_support import EXIT_CONFIG, fail, parse_host_port, parse_units
from kilowatch.profiles import load_builtin
from sim.faults import Fault, parse_fault

if TYPE_CHECKING:
    from sim.server import Parity, SimServer

S = TypeVar("S")
T = TypeVar("T")

app = typer.Typer(no_args_is_help=True)


@app.callback()
def sim() -> None:
    """Simulated Modbus meters for tests and demos."""


def parse_start(text: str) -> datetime:
    """An ISO 8601 time that names its timezone (a bare local time is ambiguous)."""
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time like 2025-03-03T07:00:00+07:00") from None
    if start.utcoffset() is None:
        raise ValueError(f"{text!r} has no timezone; add one, e.g. +07:00 or Z")
    return start


@app.command()
def serve(
    profile: Annotated[str, typer.Option(help="Device profile id or alias, e.g. eastron-sdm630.")],
    units: Annotated[str, typer.Option(help="Unit ids to serve: 1-3, 1,2,5 or 1-3,7.")] = "1",
    tcp: Annotated[
        str | None,
        typer.Option(
            help="Serve Modbus TCP on host:port; port 0 picks a free one. The default, on 127.0.0.1:5020, "
            "when neither --rtu nor --rtu-over-tcp is given."
        ),
    ] = None,
    rtu: Annotated[
        str | None, typer.Option(help="Serve Modbus RTU on this serial device (e.g. a pseudo-terminal).")
    ] = None,
    rtu_over_tcp: Annotated[
        str | None,
        typer.Option(help="Serve RTU frames over TCP on host:port, as a serial-to-Ethernet converter."),
    ] = None,
    baud: Annotated[int, typer.Option(min=1, help="Baud rate of the --rtu line.")] = 9600,
    parity: Annotated[
        str, typer.Option(help="Parity of the --rtu line: N, E or O (8 data bits, 1 stop).")
    ] = "N",
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Make a unit misbehave: UNIT:dead, UNIT:slow=SECONDS, UNIT:crc (RTU framing only), "
            "UNIT:exception=CODE or UNIT:garbage. Repeatable."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Scenario seed; the same seed replays the same loads.")] = 1,
    speed: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per real second.")] = 1.0,
    update_interval: Annotated[
        float, typer.Option(min=0.001, help="Simulated seconds between register refreshes.")
    ] = 1.0,
    start: Annotated[
        str | None, typer.Option(help="Simulated start time, ISO 8601 with timezone (default: now).")
    ] = None,
    served_log: Annotated[
        Path | None,
        typer.Option(
            help="Append one line per read answered: unit, function, address, count, UTC ms "
            "(ground truth for end-to-end tests)."
        ),
    ] = None,
) -> None:
    """Serve simulated meters over Modbus TCP, an RTU serial line or RTU-over-TCP until SIGINT or SIGTERM.

    Prints one line starting with "serving" once it listens.
    """
    given = [
        name
        for name, value in (("--tcp", tcp), ("--rtu", rtu), ("--rtu-over-tcp", rtu_over_tcp))
        if value is not None
    ]
    if len(given) > 1:
        raise typer.BadParameter(f"{' and '.join(given)} exclude each other; give one", param_hint=given[-1])
    unit_ids = _option(parse_units, units, "--units")
    address = rtu_over_tcp or tcp or "127.0.0.1:5020"
    host, port = _option(partial(parse_host_port, allow_zero=True), address, given[0] if given else "--tcp")
    start_time = None if start is None else _option(parse_start, start, "--start")
    line_parity = _option(parse_parity, parity, "--parity")
    faults = _option(parse_faults, fault or [], "--fault")
    try:
        device_profile = load_builtin(profile)
    except KeyError as exc:
        fail(str(exc.args[0]), EXIT_CONFIG)
    from sim.server import SimServer

    with contextlib.ExitStack() as files:
        log = None if served_log is None else files.enter_context(served_log.open("a", buffering=1))
        try:
            server = SimServer(
                profile=device_profile, units=unit_ids, host=host, port=port, rtu=rtu, baud=baud,
                parity=line_parity, rtu_over_tcp=rtu_over_tcp is not None, faults=faults,
                seed=seed, speed=speed, update_interval=update_interval, start=start_time, served_log=log,
            )  # fmt: skip
        except ValueError as exc:  # options that are fine alone but not together, e.g. a crc fault on TCP
            fail(str(exc), EXIT_CONFIG)
        asyncio.run(_serve(server))


@app.command()
def generate(
    scenario: Annotated[str, typer.Option(help="Scenario file, or a shipped scenario's name.")],
    days: Annotated[int, typer.Option(min=1, help="Days of data to generate.")],
    out: Annotated[Path, typer.Option(help="Directory to write readings/ and labels.json into.")],
    start: Annotated[
        str | None, typer.Option(help="First local day, YYYY-MM-DD (default: the scenario's start).")
    ] = None,
    interval: Annotated[int, typer.Option(min=1, help="Seconds between poll cycles.")] = 60,
    all_quantities: Annotated[
        bool, typer.Option(help="Every quantity of the profile, not only the dataset's default set.")
    ] = False,
) -> None:
    """Write a labelled dataset: ReadingsBatch JSON lines per gateway plus labels.json (the ground truth)."""
    from rich.progress import Progress

    from kilowatch.yamlconfig import ConfigError
    from sim.generate import Run, write_dataset
    from sim.scenario import load_scenario

    first_day = None if start is None else _option(date.fromisoformat, start, "--start")
    try:
        spec = load_scenario(scenario)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    run = Run(
        spec, start=first_day or spec.start, days=days, interval_s=interval, all_quantities=all_quantities
    )
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{spec.name}: {len(spec.meters)} meters", total=run.steps * len(run.gateways))
        written = write_dataset(run, out, lambda n: bar.advance(task, n))
    print(f"wrote {len(written) - 1} gateway files and labels.json under {out}")


def parse_parity(text: str) -> Parity:
    """N, E or O, as serial settings are written (9600 8N1); lower case is fine."""
    if text.upper() not in ("N", "E", "O"):
        raise ValueError(f"{text!r} is not N (none), E (even) or O (odd)")
    return cast("Parity", text.upper())


def parse_faults(texts: list[str]) -> dict[int, Fault]:
    """``--fault`` values -> {unit: fault}; ValueError if one is malformed or a unit has two faults."""
    faults: dict[int, Fault] = {}
    for text in texts:
        unit, fault = parse_fault(text)
        if unit in faults:
            raise ValueError(f"unit {unit} has two faults; give at most one per unit")
        faults[unit] = fault
    return faults


def _option(parse: Callable[[S], T], given: S, name: str) -> T:
    """Parse an option's value, turning a ValueError into typer's usage error (exit 2) naming the option."""
    try:
        return parse(given)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


async def _serve(server: SimServer) -> None:
    from sim.server import SimServerError

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await server.start()
    except SimServerError as exc:
        fail(str(exc))
    try:
        units = server.units
        listed = ",".join(map(str, units))
        noun = "meter" if len(units) == 1 else "meters"
        print(f"serving {len(units)} {noun} ({server.profile.id}, units {listed}) on {server.endpoint}")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await server.stop()
