"""`kilowatch agent ...`: read one meter by hand, or run the agent from its config file.

pymodbus and aiomqtt are imported inside the commands (through the modules that need them), so
``kilowatch --help`` stays light.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from agent.config import AgentConfig
from agent.poller import Poll, poll
from agent.transport import ModbusTcpReader
from kilowatch.cli_support import EXIT_CONFIG, LogLevel, fail, load_config, parse_host_port, setup_logging
from kilowatch.profiles import Profile, load_builtin
from kilowatch.quantities import QUANTITIES

app = typer.Typer(no_args_is_help=True)


def _iso_ms(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_table(result: Poll, profile: Profile, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("quantity", "value", "unit", "quality", title=title)
    for reg in profile.registers:
        name, unit = reg.quantity, QUANTITIES[reg.quantity].unit
        if name in result.values:
            table.add_row(name, f"{result.values[name]:.6g}", unit, "good")
        else:
            table.add_row(name, "", unit, f"[red]error[/red]: {result.errors.get(name, '')}")
    Console().print(table)


@app.command()
def read(
    tcp: Annotated[str, typer.Option("--tcp", help="Modbus TCP meter or gateway as HOST:PORT")],
    unit: Annotated[int, typer.Option(min=1, max=247, help="Modbus unit (slave) id")],
    profile: Annotated[str, typer.Option(help="Device profile id or alias, e.g. eastron-sdm630")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.01, help="Response timeout in seconds (default: the profile's)")
    ] = None,
) -> None:
    """Read one meter once and print its values: the first thing to try on a new installation.

    Values that cannot be read are shown with the reason; the exit code is 1 only when none could be.
    """
    try:
        host, port = parse_host_port(tcp)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tcp") from None
    try:
        meter_profile = load_builtin(profile)
    except KeyError as exc:
        fail(str(exc.args[0]), EXIT_CONFIG)
    setup_logging(LogLevel.ERROR)

    async def _read() -> Poll:
        timeout_s = timeout or meter_profile.connection.timeout_s
        async with ModbusTcpReader(bus=tcp, host=host, port=port, timeout_s=timeout_s) as reader:
            return await poll(reader, meter_profile, unit)

    result = asyncio.run(_read())
    if not result.values and result.failures:
        fail(f"cannot read the meter: {result.failures[0]}")
    if not as_json:
        _print_table(result, meter_profile, f"{meter_profile.id}, unit {unit} at {host}:{port}")
        return
    out: dict[str, object] = {
        "profile": meter_profile.id,
        "unit": unit,
        "ts": _iso_ms(result.ts),
        "values": result.values,
    }
    if result.errors:
        out["errors"] = result.errors
    typer.echo(json.dumps(out))


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent configuration file (YAML)")],
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="Logging threshold")
    ] = LogLevel.INFO,
) -> None:
    """Poll the configured meters and publish their readings until SIGTERM or Ctrl-C."""
    from agent.runner import run as run_agent

    agent_config = load_config(AgentConfig, config)
    setup_logging(log_level)
    asyncio.run(run_agent(agent_config))
