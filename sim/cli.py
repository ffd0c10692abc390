"""`kilowatch sim`: serve simulated meters for tests, demos and trying the agent without hardware."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
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
    profile: Annotated[
        str | None, typer.Option(help="Device profile id or alias, e.g. eastron-sdm630 (or --scenario).")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            help="Serve every bus of a scenario (a file or a shipped scenario's name) instead of one "
            "profile: TCP buses on consecutive ports from --tcp (port 0: free ones), RTU buses as "
            "RTU-over-TCP there too, or on pseudo-terminals with --rtu-dir."
        ),
    ] = None,
    units: Annotated[
        str | None, typer.Option(help="Unit ids to serve: 1-3, 1,2,5 or 1-3,7 (default 1).")
    ] = None,
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
    rtu_dir: Annotated[
        Path | None,
        typer.Option(
            help="With --scenario: serve each RTU bus on a socat pseudo-terminal pair whose master end is "
            "DIR/<site>.<gateway>.<bus> (one socat process per RTU bus: mixed-province starts about a hundred; "
            "without --rtu-dir they are served as RTU-over-TCP)."
        ),
    ] = None,
    baud: Annotated[int, typer.Option(min=1, help="Baud rate of the RTU lines.")] = 9600,
    parity: Annotated[
        str, typer.Option(help="Parity of the RTU lines: N, E or O (8 data bits, 1 stop).")
    ] = "N",
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Make a unit misbehave: UNIT:dead, UNIT:slow=SECONDS, UNIT:crc (RTU framing only), "
            "UNIT:exception=CODE or UNIT:garbage. Repeatable. (A scenario brings its own faults.)"
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed (default 1); the same seed replays the same loads.")
    ] = None,
    days: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --scenario: days from --start's local day over which its anomalies are placed, "
            "as `generate --days` places them.",
        ),
    ] = 7,
    speed: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per real second.")] = 1.0,
    update_interval: Annotated[
        float, typer.Option(min=0.001, help="Simulated seconds between register refreshes.")
    ] = 1.0,
    start: Annotated[
        str | None,
        typer.Option(
            help="Simulated start time, ISO 8601 with timezone (default: now, or the scenario's first day "
            "at 00:00 local time)."
        ),
    ] = None,
    served_log: Annotated[
        Path | None,
        typer.Option(
            help="Append one line per read answered: unit, function, address, count, UTC ms "
            "(ground truth for end-to-end tests; --profile only)."
        ),
    ] = None,
) -> None:
    """Serve simulated meters over Modbus TCP, an RTU serial line or RTU-over-TCP until SIGINT or SIGTERM.

    Prints one line starting with "serving" per line served, once all listen.
    """
    given = [
        name
        for name, value in (("--tcp", tcp), ("--rtu", rtu), ("--rtu-over-tcp", rtu_over_tcp))
        if value is not None
    ]
    if len(given) > 1:
        raise typer.BadParameter(f"{' and '.join(given)} exclude each other; give one", param_hint=given[-1])
    address = rtu_over_tcp or tcp or "127.0.0.1:5020"
    host, port = _option(partial(parse_host_port, allow_zero=True), address, given[0] if given else "--tcp")
    start_time = None if start is None else _option(parse_start, start, "--start")
    line_parity = _option(parse_parity, parity, "--parity")
    if (profile is None) == (scenario is None):
        raise typer.BadParameter("give either --profile or --scenario", param_hint="--profile")
    if scenario is not None:
        _refuse_with_scenario(
            units=units, rtu=rtu, rtu_over_tcp=rtu_over_tcp, fault=fault, seed=seed, served_log=served_log
        )
        lines = _Lines(host, port, rtu_dir, baud, line_parity)
        asyncio.run(_serve_scenario(scenario, lines, start_time, days, speed, update_interval))
        return
    if rtu_dir is not None:
        raise typer.BadParameter("--rtu-dir serves a scenario's RTU buses; use --rtu", param_hint="--rtu-dir")
    unit_ids = _option(parse_units, units or "1", "--units")
    faults = _option(parse_faults, fault or [], "--fault")
    try:
        device_profile = load_builtin(profile or "")
    except KeyError as exc:
        fail(str(exc.args[0]), EXIT_CONFIG)
    from sim.server import SimServer

    with contextlib.ExitStack() as files:
        log = None if served_log is None else files.enter_context(served_log.open("a", buffering=1))
        try:
            server = SimServer(
                profile=device_profile, units=unit_ids, host=host, port=port, rtu=rtu, baud=baud,
                parity=line_parity, rtu_over_tcp=rtu_over_tcp is not None, faults=faults,
                seed=1 if seed is None else seed, speed=speed, update_interval=update_interval,
                start=start_time, served_log=log,
            )  # fmt: skip
        except ValueError as exc:  # options that are fine alone but not together, e.g. a crc fault on TCP
            fail(str(exc), EXIT_CONFIG)
        asyncio.run(_serve([_Served(server)]))


def _refuse_with_scenario(**options: object) -> None:
    """Options that describe one line of one profile make no sense for a scenario, which says it all."""
    for name, value in options.items():
        if value:
            flag = "--" + name.replace("_", "-")
            raise typer.BadParameter(f"{flag} serves one profile; a scenario brings its own", param_hint=flag)


@app.command()
def generate(
    scenario: Annotated[str, typer.Option(help="Scenario file, or a shipped scenario's name.")],
    days: Annotated[int, typer.Option(min=1, help="Days of data to generate.")],
    out: Annotated[
        Path | None, typer.Option(help="Directory to write readings/ and labels.json into.")
    ] = None,
    publish: Annotated[
        str | None,
        typer.Option(
            help="Publish the readings to the MQTT broker at mqtt://HOST[:PORT] (QoS 1, MQTT 5) on the "
            "contract's topics, as gateways flushing a backlog; with --out, also write them (as jsonl)."
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="First local day, YYYY-MM-DD (default: the scenario's start).")
    ] = None,
    interval: Annotated[int, typer.Option(min=1, help="Seconds between poll cycles.")] = 60,
    all_quantities: Annotated[
        bool, typer.Option(help="Every quantity of the profile, not only the dataset's default set.")
    ] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="jsonl: readings/<site>/<gateway>.jsonl, one ReadingsBatch per poll cycle (the MQTT "
            "contract). npz: readings/<site>/<gateway>.npz, the same readings in columns, far "
            "smaller and faster to write (layout above).",
        ),
    ] = "jsonl",
    jobs: Annotated[
        int | None, typer.Option(min=1, help="Processes writing gateways at once (default: one per core).")
    ] = None,
) -> None:
    """Write a labelled dataset: the readings per gateway plus labels.json (the ground truth), or publish
    the readings to a broker, or both.

    \b
    --format npz writes one uncompressed .npz (numpy.load) per gateway; T poll cycles, M meters:
      site, gateway, schema_version, interval_s   scalars
      ts              int64 [T]     poll instants, UTC epoch ms (true time)
      seq             int64 [T]     the cycle's batch seq in jsonl; -1: no meter answered, no batch
      clock_shift_ms  int64 [T]     the gateway clock's jump, added to every ts and sent_at
      boot_id, booted_ms            the gateway's boot and its UTC ms: a reading's mono_ms is
                                    ts + delay_ms - booted_ms (true time; no clock jump in it)
      meter, profile  str [M]
      quantity        str [Q]       every quantity some meter of the gateway reports
      carries         bool [M, Q]   which of them each meter reports
      status          int8 [T, M]   0 good, 1 error (quality error, no values), 2 no reading (silent)
      delay_ms        int32 [T, M]  a slow answer: the reading's ts is ts + clock_shift_ms + delay_ms
      <quantity>      [T, M]        float64 for energy counters, float32 otherwise; NaN unless good
    Every reading's clock is synced and sent_at = ts + clock_shift_ms + interval; frozen meters and
    counter resets are in the values. sim.generate.npz_batches(path) gives back the jsonl batches.
    """
    from rich.progress import Progress

    from kilowatch.yamlconfig import ConfigError
    from sim.generate import FORMATS, Broker, DatasetFiles, Run, publish_dataset, write_dataset
    from sim.scenario import load_scenario

    if out is None and publish is None:
        raise typer.BadParameter("give --out, --publish or both", param_hint="--out")
    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
    if publish is not None and fmt != "jsonl":
        raise typer.BadParameter("--publish writes what it publishes: jsonl", param_hint="--format")
    broker = None if publish is None else _option(Broker.parse, publish, "--publish")
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
        advance = partial(bar.advance, task)
        written: list[Path] = []
        if broker is not None:
            files = None if out is None else DatasetFiles(run, out)
            sent = _publish(publish_dataset(run, broker, advance, files), publish or "")
            print(f"published {sent} batches to {publish}")
            written = [] if files is None else files.finish()
        elif out is not None:
            written = write_dataset(run, out, advance, fmt=fmt, jobs=jobs or os.cpu_count() or 1)
    if written:
        print(f"wrote {len(written) - 1} gateway files and labels.json under {out}")


def _publish(publishing: Coroutine[None, None, int], url: str) -> int:
    """Run `publishing`; a broker that cannot be reached or drops the connection exits 1 naming it."""
    import aiomqtt

    try:
        return asyncio.run(publishing)
    except aiomqtt.MqttError as exc:
        fail(f"cannot publish to {url}: {exc}")


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


@dataclass(frozen=True)
class _Lines:
    """Where a scenario's buses go: TCP listeners from `host`:`port` on, RTU lines maybe on pseudo-terminals."""

    host: str
    port: int
    rtu_dir: Path | None
    baud: int
    parity: Parity


@dataclass(frozen=True)
class _Served:
    """A server and how its "serving" line names it: the bus, and the end a master opens if not its own."""

    server: SimServer
    bus: str | None = None
    master_end: str | None = None

    def announcement(self) -> str:
        units = self.server.units
        listed = ",".join(map(str, units))
        noun = "meter" if len(units) == 1 else "meters"
        what = f"{self.bus}: " if self.bus else ""
        where = self.server.endpoint
        if self.master_end is not None and self.server.rtu is not None:
            where = where.replace(self.server.rtu, self.master_end)
        return (
            f"serving {len(units)} {noun} ({what}{'+'.join(self.server.profiles)}, units {listed}) on {where}"
        )


async def _serve_scenario(
    name: str, lines: _Lines, start: datetime | None, days: int, speed: float, update_interval: float
) -> None:
    """Build a server per bus of the scenario on one shared clock, pseudo-terminals first, then serve."""
    from kilowatch.timebase import VIETNAM_TZ
    from kilowatch.yamlconfig import ConfigError
    from sim.clock import SimClock
    from sim.live import pty_pair, scenario_buses
    from sim.scenario import load_scenario
    from sim.server import SimServer, SimServerError

    try:
        spec = load_scenario(name)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    clock = SimClock(start or datetime.combine(spec.start, time(), VIETNAM_TZ), speed)
    async with contextlib.AsyncExitStack() as ptys:
        served = []
        port = lines.port
        for bus in scenario_buses(spec, clock.start, days, update_interval):
            master = rtu_line = None
            try:
                if bus.transport == "rtu" and lines.rtu_dir is not None:
                    master = lines.rtu_dir / f"{bus.site}.{bus.gateway}.{bus.bus}"
                    rtu_line = str(await ptys.enter_async_context(pty_pair(master)))
                server = SimServer(
                    units=bus.units, clock=clock, host=lines.host, port=port, rtu=rtu_line,
                    rtu_over_tcp=bus.transport == "rtu" and rtu_line is None, baud=lines.baud,
                    parity=lines.parity,
                )  # fmt: skip
            except SimServerError as exc:
                fail(str(exc))
            except ValueError as exc:  # e.g. ports beyond 65535
                fail(str(exc), EXIT_CONFIG)
            served.append(_Served(server, bus.name, None if master is None else str(master)))
            if rtu_line is None and port:
                port += 1
        await _serve(served)


@app.command()
def weather(
    scenario: Annotated[str, typer.Option(help="Scenario file, or a shipped scenario's name (its seed).")],
    first: Annotated[str, typer.Option("--from", help="First local day, YYYY-MM-DD.")],
    last: Annotated[str, typer.Option("--to", help="Last local day, YYYY-MM-DD (included).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The CSV file to write.")],
) -> None:
    """Write the scenario's daily mean outdoor temperature as `date,temperature_c` CSV: what the collector's
    reporting.temperature_file takes, so the Directive 20 reports normalise a simulated province's savings
    for its own weather."""
    from kilowatch.yamlconfig import ConfigError
    from sim.scenario import load_scenario
    from sim.weather import daily_mean_temperature

    try:
        day, end = date.fromisoformat(first), date.fromisoformat(last)
    except ValueError as exc:
        fail(f"--from/--to: {exc}", EXIT_CONFIG)
    try:
        seed = load_scenario(scenario).seed
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    lines = ["date,temperature_c"]
    while day <= end:
        lines.append(f"{day},{daily_mean_temperature(seed, day):.3f}")
        day += timedelta(days=1)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - 1} days to {out}")


async def _serve(servers: list[_Served]) -> None:
    """Start every server, print one "serving" line each, and serve until SIGINT or SIGTERM."""
    from sim.server import SimServerError

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    started = []
    try:
        for served in servers:
            try:
                await served.server.start()
            except SimServerError as exc:
                fail(str(exc))
            started.append(served.server)
        for served in servers:
            print(served.announcement())
        sys.stdout.flush()
        await stopping.wait()
    finally:
        for server in started:
            await server.stop()
