"""`kilowatch sim`: serve simulated meters for tests, demos and trying the agent without hardware."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, TypeVar

import typer

from kilowatch.cli_support import EXIT_CONFIG, fail, parse_host_port
from kilowatch.profiles import Profile, load_builtin
from sim.register_image import MAX_UNIT

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True)


@app.callback()
def sim() -> None:
    """Simulated Modbus meters for tests and demos."""


def parse_units(text: str) -> list[int]:
    """Unit ids from `1-3`, `1,2,5` or `1-3,7`, in order, each 1-247 and listed once."""
    units: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a unit id or a range like 1-3") from None
        if not 1 <= low <= high <= MAX_UNIT:
            raise ValueError(f"{part.strip()!r}: unit ids are 1-{MAX_UNIT} and a range runs low-high")
        units.extend(range(low, high + 1))
    duplicates = sorted({u for u in units if units.count(u) > 1})
    if duplicates:
        raise ValueError(f"unit ids listed twice: {duplicates}")
    return units


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
        str, typer.Option(help="host:port to listen on; port 0 picks a free one.")
    ] = "127.0.0.1:5020",
    seed: Annotated[int, typer.Option(help="Scenario seed; the same seed replays the same loads.")] = 1,
    speed: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per real second.")] = 1.0,
    update_interval: Annotated[
        float, typer.Option(min=0.001, help="Simulated seconds between register refreshes.")
    ] = 1.0,
    start: Annotated[
        str | None, typer.Option(help="Simulated start time, ISO 8601 with timezone (default: now).")
    ] = None,
) -> None:
    """Serve simulated meters over Modbus TCP until SIGINT or SIGTERM.

    Prints one line starting with "serving" once it listens.
    """
    unit_ids = _option(parse_units, units, "--units")
    host, port = _option(partial(parse_host_port, allow_zero=True), tcp, "--tcp")
    start_time = None if start is None else _option(parse_start, start, "--start")
    try:
        device_profile = load_builtin(profile)
    except KeyError as exc:
        fail(str(exc.args[0]), EXIT_CONFIG)
    asyncio.run(
        _serve(
            device_profile, unit_ids, host, port,
            seed=seed, speed=speed, update_interval=update_interval, start=start_time,
        )
    )  # fmt: skip


def _option(parse: Callable[[str], T], text: str, name: str) -> T:
    """Parse an option's text, turning a ValueError into typer's usage error (exit 2) naming the option."""
    try:
        return parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


async def _serve(
    profile: Profile,
    units: list[int],
    host: str,
    port: int,
    *,
    seed: int,
    speed: float,
    update_interval: float,
    start: datetime | None,
) -> None:
    from sim.server import SimServer, SimServerError

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    server = SimServer(
        profile=profile, units=units, host=host, port=port,
        seed=seed, speed=speed, update_interval=update_interval, start=start,
    )  # fmt: skip
    try:
        await server.start()
    except SimServerError as exc:
        fail(str(exc))
    try:
        listed = ",".join(map(str, units))
        noun = "meter" if len(units) == 1 else "meters"
        shown_host = f"[{host}]" if ":" in host else host
        print(f"serving {len(units)} {noun} ({profile.id}, units {listed}) on tcp {shown_host}:{server.port}")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await server.stop()
