"""`kilowatch agent ...`: read one meter or its raw registers by hand, or run the agent from its config file.

pymodbus and aiomqtt are imported inside the commands (through the modules that need them), so
``kilowatch --help`` stays light.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.config import AgentConfig
from agent.errors import AgentError, BusUnavailable
from agent.poller import Poll, poll
from agent.transport import Link, ModbusReader, SerialPortLink, TcpLink
from kilowatch.cli_support import (
    EXIT_CONFIG,
    LogLevel,
    fail,
    load_config,
    parse_host_port,
    parse_units,
    setup_logging,
)
from kilowatch.profiles import Connection, Profile, Table, load_builtin
from kilowatch.quantities import QUANTITIES
from kilowatch.timebase import utc_datetime

if TYPE_CHECKING:
    from agent.scan import ScanReport

app = typer.Typer(no_args_is_help=True)


class Parity(StrEnum):
    N = "N"
    E = "E"
    O = "O"  # noqa: E741 - the letter every serial tool uses


def _iso_ms(ts_ms: int) -> str:
    return utc_datetime(ts_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_table(result: Poll, profile: Profile, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("quantity", "value", "unit", "quality", title=title)
    for reg in profile.registers:
        name, unit = reg.quantity, QUANTITIES[reg.quantity].unit
        if name in result.values:
            table.add_row(name, f"{result.values[name]:.6g}", unit, "good")
        elif name in result.bad:
            table.add_row(name, "", unit, f"[red]bad[/red]: {result.bad[name]}")
        else:
            table.add_row(name, "", unit, f"[red]error[/red]: {result.errors.get(name, '')}")
    Console().print(table)


def _reader_for(
    tcp: str | None,
    rtu: str | None,
    baud: int | None,
    parity: Parity | None,
    defaults: Connection,
    timeout: float,
) -> ModbusReader:
    """The reader `--tcp` or `--rtu` asks for; exactly one of them, and serial settings only with --rtu."""
    if (tcp is None) == (rtu is None):
        raise typer.BadParameter(
            "give exactly one of --tcp HOST:PORT and --rtu DEVICE", param_hint="--tcp/--rtu"
        )
    if tcp is not None:
        if baud is not None or parity is not None:
            raise typer.BadParameter("--baud and --parity apply to --rtu only", param_hint="--baud/--parity")
        try:
            host, port = parse_host_port(tcp)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tcp") from None
        return ModbusReader(TcpLink(host, port), bus=tcp, timeout_s=timeout)
    assert rtu is not None
    link = SerialPortLink(
        device=rtu,
        baud=baud or defaults.baud,
        parity=(parity or Parity(defaults.parity)).value,
        stopbits=defaults.stopbits,
        bytesize=defaults.bytesize,
    )
    return ModbusReader(link, bus=rtu, timeout_s=timeout)


def _print_raw(address: int, table: Table, words: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    from agent.raw_decode import decodings

    console = Console()
    listing = RichTable("address", "manual", "hex", "uint16", "int16", title=f"{table.value} registers")
    for i, word in enumerate(words):
        signed = word - 0x10000 if word & 0x8000 else word
        listing.add_row(
            f"{address + i:#06x}",
            str(table.modicon_base + address + i),
            f"{word:04x}",
            str(word),
            str(signed),
        )
    console.print(listing)
    candidates = RichTable("words", "type", "order", "value", title="every decoding")
    for d in decodings(words):
        value = (
            f"{d.value:.7g}"
            if isinstance(d.value, float)
            else repr(d.value)
            if isinstance(d.value, str)
            else str(d.value)
        )
        candidates.add_row(f"{d.offset}-{d.offset + d.count - 1}", d.type.value, d.order.value, value)
    console.print(candidates)


def _profile_or_none(profile: str | None) -> Profile | None:
    try:
        return None if profile is None else load_builtin(profile)
    except KeyError as exc:
        fail(str(exc.args[0]), EXIT_CONFIG)


@app.command()
def read(
    unit: Annotated[int, typer.Option(min=1, max=247, help="Modbus unit (slave) id")],
    tcp: Annotated[str | None, typer.Option("--tcp", help="Modbus TCP meter or gateway as HOST:PORT")] = None,
    rtu: Annotated[
        str | None, typer.Option("--rtu", help="Serial port of an RS-485 line, e.g. /dev/ttyUSB0")
    ] = None,
    baud: Annotated[
        int | None, typer.Option(min=1, help="Baud rate with --rtu (default: the profile's)")
    ] = None,
    parity: Annotated[
        Parity | None, typer.Option(case_sensitive=False, help="Parity with --rtu (default: the profile's)")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Device profile id or alias, e.g. eastron-sdm630 (required)")
    ] = None,
    raw: Annotated[
        int | None, typer.Option(min=0, max=0xFFFF, hidden=True, help="Old spelling of `agent raw --address`")
    ] = None,
    count: Annotated[int, typer.Option(min=1, max=125, hidden=True, help="With the old --raw")] = 2,
    table: Annotated[
        Table, typer.Option(case_sensitive=False, hidden=True, help="With the old --raw")
    ] = Table.INPUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.01, help="Response timeout in seconds (default: the profile's)")
    ] = None,
) -> None:
    """Read one meter once and print its values: the first thing to try on a new installation.

    Values that cannot be read are shown with the reason; the exit code is 1 when none could be, 2 when
    the port cannot be used. To see a meter's registers without a profile, use ``kilowatch agent raw``.
    """
    if raw is not None:
        typer.secho(
            "warning: `agent read --raw` is now `kilowatch agent raw --address`",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raw_command(
            unit=unit, address=raw, tcp=tcp, rtu=rtu, baud=baud, parity=parity, count=count, table=table,
            profile=profile, as_json=as_json, timeout=timeout,
        )  # fmt: skip
        return
    meter_profile = _profile_or_none(profile)
    if meter_profile is None:
        raise typer.BadParameter(
            "give --profile (to read raw registers without one: kilowatch agent raw)", param_hint="--profile"
        )
    reader = _reader_for(
        tcp, rtu, baud, parity, meter_profile.connection, timeout or meter_profile.connection.timeout_s
    )
    setup_logging(LogLevel.ERROR)

    async def _read() -> Poll:
        async with reader:
            return await poll(reader, meter_profile, unit)

    try:
        result = asyncio.run(_read())
    except BusUnavailable as exc:
        fail(str(exc), EXIT_CONFIG if rtu else 1)
    except AgentError as exc:
        fail(f"cannot read the meter: {exc}")
    down = next((f for f in result.failures if isinstance(f, BusUnavailable)), None)
    if down is not None and rtu:
        fail(str(down), EXIT_CONFIG)
    if not result.values and result.failures:
        fail(f"cannot read the meter: {result.failures[0]}")
    if not as_json:
        _print_table(result, meter_profile, f"{meter_profile.id}, unit {unit} at {reader.link}")
        return
    out: dict[str, object] = {
        "profile": meter_profile.id,
        "unit": unit,
        "ts": _iso_ms(result.ts),
        "values": result.values,
    }
    if result.errors:
        out["errors"] = result.errors
    if result.bad:
        out["bad"] = result.bad
    typer.echo(json.dumps(out))


@app.command("raw")
def raw_command(
    unit: Annotated[int, typer.Option(min=1, max=247, help="Modbus unit (slave) id")],
    address: Annotated[
        int, typer.Option(min=0, max=0xFFFF, help="0-based wire address of the first register")
    ],
    tcp: Annotated[str | None, typer.Option("--tcp", help="Modbus TCP meter or gateway as HOST:PORT")] = None,
    rtu: Annotated[
        str | None, typer.Option("--rtu", help="Serial port of an RS-485 line, e.g. /dev/ttyUSB0")
    ] = None,
    baud: Annotated[
        int | None, typer.Option(min=1, help="Baud rate with --rtu (default: the profile's, else 9600)")
    ] = None,
    parity: Annotated[
        Parity | None,
        typer.Option(case_sensitive=False, help="Parity with --rtu (default: the profile's, else N)"),
    ] = None,
    count: Annotated[int, typer.Option(min=1, max=125, help="Registers to read")] = 2,
    table: Annotated[Table, typer.Option(case_sensitive=False, help="Register table")] = Table.INPUT,
    profile: Annotated[
        str | None,
        typer.Option(help="Device profile whose connection defaults (baud, parity, timeout) to use"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.01, help="Response timeout in seconds (default: the profile's)")
    ] = None,
) -> None:
    """Read raw registers once and print the words and every way to decode them (all types, all word
    orders), to find the one that matches the meter's display. The exit code is 1 when they cannot be read,
    2 when the port cannot be used."""
    meter_profile = _profile_or_none(profile)
    defaults = Connection() if meter_profile is None else meter_profile.connection
    reader = _reader_for(tcp, rtu, baud, parity, defaults, timeout or defaults.timeout_s)
    setup_logging(LogLevel.ERROR)

    async def _read() -> list[int]:
        async with reader:
            return await reader.read(table, address, count, unit)

    try:
        words = asyncio.run(_read())
    except BusUnavailable as exc:
        fail(str(exc), EXIT_CONFIG if rtu else 1)
    except AgentError as exc:
        fail(f"cannot read the meter: {exc}")
    if as_json:
        typer.echo(json.dumps({"table": table.value, "address": address, "unit": unit, "words": words}))
    else:
        _print_raw(address, table, words)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent configuration file (YAML)")],
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="Logging threshold")
    ] = LogLevel.INFO,
) -> None:
    """Poll the configured meters and publish their readings until SIGTERM or Ctrl-C."""
    # The runtime in this process, without typer and click: see agent/__main__.py. -P: a folder named
    # agent in the working directory must not stand in for the installed package.
    sys.stdout.flush()
    sys.stderr.flush()
    command = ["-P", "-m", "agent", "--config", str(config), "--log-level", log_level.value]
    os.execv(sys.executable, [sys.executable, *command])  # noqa: S606 - our interpreter, fixed arguments


@app.command()
def doctor(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent configuration file (YAML)")] = Path(
        "/etc/kilowatch/agent.yaml"
    ),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts instead of the checklist")
    ] = False,
    user: Annotated[
        str, typer.Option(help="The account the agent runs as (its serial port access)")
    ] = "kilowatch",
) -> None:
    """Check the installed agent: config and profiles, serial ports, one read per meter, the broker (TLS,
    credentials), the clock, the spool (space, integrity) and the systemd unit. Exit 1 when a check fails."""
    from agent.doctor import examine, render

    report = asyncio.run(examine(config, user=user))
    typer.echo(report.model_dump_json(indent=2) if as_json else render(report))
    if not report.ok:
        raise typer.Exit(1)


TurnaroundMs = Annotated[
    float, typer.Option("--turnaround-ms", min=0, help="Meter response latency assumed per request, in ms")
]


@app.command("plan")
def plan_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent configuration file (YAML)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text")] = False,
    turnaround_ms: TurnaroundMs = 10.0,
) -> None:
    """Print each meter's read requests and the estimated bus time per poll cycle, without touching a bus."""
    from agent.plan_report import agent_plan, over_budget_message, render

    report = agent_plan(load_config(AgentConfig, config), turnaround_s=turnaround_ms / 1000)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        typer.echo("\n".join(render(report)))
    for bus in report.buses:
        if bus.over_budget:
            typer.secho(f"warning: {over_budget_message(bus)}", err=True, fg=typer.colors.YELLOW)


@app.command()
def check(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent configuration file (YAML)")],
    turnaround_ms: TurnaroundMs = 10.0,
) -> None:
    """Validate the configuration, its profiles' test vectors and the read plan, without touching a bus.

    Exit 2 with one line per problem. A bus whose estimated cycle exceeds the poll interval is a problem
    when the line's baud rate is known, and a warning when it is assumed (a gateway's line).
    """
    from agent.plan_report import agent_plan, over_budget_message
    from kilowatch.profiles import vector_failures

    agent_config = load_config(AgentConfig, config)
    profile_ids = sorted({load_builtin(m.profile).id for bus in agent_config.buses for m in bus.meters})
    problems = [f for pid in profile_ids for f in vector_failures(load_builtin(pid))]
    report = agent_plan(agent_config, turnaround_s=turnaround_ms / 1000)
    for bus in report.buses:
        if bus.over_budget and bus.known_line:
            problems.append(over_budget_message(bus))
        elif bus.over_budget:
            typer.secho(
                f"warning: {over_budget_message(bus)} (assumed baud)", err=True, fg=typer.colors.YELLOW
            )
    if problems:
        fail(f"{config}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems), EXIT_CONFIG)
    meters = [m for bus in report.buses for m in bus.meters]
    estimated = [b for b in report.buses if b.share is not None]
    busiest = (
        "no line-time estimate (Modbus TCP)"
        if not estimated
        else (
            f"busiest bus {(b := max(estimated, key=lambda b: b.share or 0)).name} at {b.share or 0:.1%} of the "
            f"{agent_config.poll_interval_s:g} s poll interval"
        )
    )
    typer.echo(
        f"ok {config}: {len(report.buses)} bus(es), {len(meters)} meter(s), {len(profile_ids)} profile(s), "
        f"{sum(len(m.requests) for m in meters)} requests per cycle; {busiest}"
    )


def _scan_links(tcp: str | None, rtu: str | None, baud: str | None, parity: str | None) -> list[Link]:
    from agent.scan import serial_links

    """The links `--tcp` or `--rtu` with its `--baud` and `--parity` lists ask for; ValueError if bad."""
    if (tcp is None) == (rtu is None):
        raise ValueError("give exactly one of --tcp HOST:PORT and --rtu DEVICE")
    if tcp is not None:
        if baud is not None or parity is not None:
            raise ValueError("--baud and --parity apply to --rtu only")
        host, port = parse_host_port(tcp)
        return [TcpLink(host, port)]
    assert rtu is not None
    bauds = [b.strip() for b in (baud or "9600").split(",")]
    if not all(b.isdigit() and int(b) > 0 for b in bauds):
        raise ValueError(f"--baud {baud!r}: give positive baud rates separated by commas, e.g. 9600,19200")
    parities = [p.strip().upper() for p in (parity or "N").split(",")]
    if not all(p in Parity.__members__ for p in parities):
        raise ValueError(f"--parity {parity!r}: give N, E or O separated by commas, e.g. N,E")
    return list(serial_links(rtu, [int(b) for b in bauds], parities))


def _print_scan(report: ScanReport) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    for skipped in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {skipped.transport}: {skipped.reason}")
    if not report.found:
        console.print("no unit answered")
        return
    table = RichTable("transport", "unit", "model", "answer", title="units that answered")
    for found in report.found:
        table.add_row(
            found.transport, str(found.unit), found.model or "[yellow]unknown model[/yellow]", found.answer
        )
    console.print(table)


@app.command("scan")
def scan_command(
    units: Annotated[str, typer.Option(help="Unit ids to try: 1-247, 1,2,5 or 1-3,7")],
    tcp: Annotated[str | None, typer.Option("--tcp", help="Modbus TCP gateway as HOST:PORT")] = None,
    rtu: Annotated[
        str | None, typer.Option("--rtu", help="Serial port of an RS-485 line, e.g. /dev/ttyUSB0")
    ] = None,
    baud: Annotated[
        str | None, typer.Option(help="Baud rates to try with --rtu, e.g. 9600,19200 [default: 9600]")
    ] = None,
    parity: Annotated[
        str | None, typer.Option(help="Parities to try with --rtu, e.g. N,E [default: N]")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.01, help="Seconds to wait for each unit's answer")] = 0.2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table")] = False,
) -> None:
    """Find the units on a line: try every baud x parity, probe each unit, and name the model that answered.

    Models are identified from the fingerprints of the shipped device profiles. A setting the port refuses
    is reported as skipped; a missing or busy port, or a bad unit list, exits 2.
    """
    from rich.console import Console
    from rich.progress import Progress

    from agent.scan import scan
    from kilowatch.profiles import builtin_ids

    try:
        unit_ids = parse_units(units)
    except ValueError as exc:
        fail(f"--units {units!r}: {exc}", EXIT_CONFIG)
    try:
        links = _scan_links(tcp, rtu, baud, parity)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    profiles = [load_builtin(pid) for pid in builtin_ids()]
    setup_logging(LogLevel.ERROR)
    stderr = Console(stderr=True)
    try:
        with Progress(console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
            task = bar.add_task("scanning", total=len(links) * len(unit_ids))
            report = asyncio.run(
                scan(links, unit_ids, profiles, timeout_s=timeout, progress=lambda n: bar.advance(task, n))
            )
    except BusUnavailable as exc:
        fail(str(exc), EXIT_CONFIG)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_scan(report)
