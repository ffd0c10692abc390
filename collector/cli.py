"""`kilowatch collector ...`: run the collector from its config file.

FastAPI, uvicorn, aiomqtt and influxdb-client are imported inside the command, so ``kilowatch --help``
stays light and a gateway without the `collector` extra can still run the rest of the command.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from collector.access_cli import keys, users
from collector.config import CollectorConfig
from kilowatch.cli_support import LogLevel, fail, load_config, setup_logging

app = typer.Typer(no_args_is_help=True)
app.add_typer(users, name="users")
app.add_typer(keys, name="keys")


@app.callback()
def collector() -> None:
    """Ingest readings from MQTT into the ledger and a TSDB, and serve the API."""


@app.command()
def run(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Collector configuration (see deploy/collector.example.yaml)"),
    ] = Path("collector.yaml"),
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="Log verbosity")
    ] = LogLevel.INFO,
) -> None:
    """Run the collector until SIGTERM or Ctrl-C (then it stops gracefully and exits 0)."""
    settings = load_config(CollectorConfig, config)
    setup_logging(log_level)
    from collector.service import ServiceError, serve

    try:
        asyncio.run(serve(settings))
    except ServiceError as exc:
        fail(f"collector: {exc}")
