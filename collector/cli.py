"""`kilowatch collector ...`: run the collector from its config file.

FastAPI, uvicorn, aiomqtt and influxdb-client are imported inside the command, so ``kilowatch --help``
stays light and a gateway without the `collector` extra can still run the rest of the command.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from collector.config import CollectorConfig
from collector.detectors.config import Sites
from kilowatch.cli_support import LogLevel, fail, load_config, setup_logging
from kilowatch.mqtt_contract import ID_PATTERN

log = logging.getLogger(__name__)
EXIT_USAGE = 2

app = typer.Typer(no_args_is_help=True)


@app.callback()
def collector() -> None:
    """Ingest readings from MQTT into the ledger and a TSDB, and serve the API."""


_CONFIG = typer.Option("--config", "-c", help="Collector configuration (see deploy/collector.example.yaml)")


@app.command("move-meter")
def move_meter(
    meter: Annotated[str, typer.Argument(help="The meter id, as its gateway publishes it")],
    to: Annotated[str, typer.Option("--to", help="SITE/GATEWAY that polls the meter from now on")],
    config: Annotated[Path, _CONFIG] = Path("collector.yaml"),
) -> None:
    """Bind a meter to another gateway (it moved, or its first gateway was the wrong one).

    Each meter belongs to one gateway: the one the sites file names, else the first it was seen from.
    Readings of it from any other gateway are refused and reported (/api/v1/gateways/events). The move is
    logged and kept as a `meter_moved` event. A meter whose gateway the sites file names is moved there.
    """
    settings = load_config(CollectorConfig, config)
    site, _, gateway = to.partition("/")
    for kind, ident in (("meter", meter), ("site", site), ("gateway", gateway)):
        if not re.fullmatch(ID_PATTERN, ident):
            fail(f"{kind} {ident!r} is not an id ({ID_PATTERN}); --to takes SITE/GATEWAY", EXIT_USAGE)
    if settings.detection.sites is not None:
        sites = load_config(Sites, settings.detection.sites)
        for site_id, site_config in sites.sites.items():
            configured = site_config.meters.get(meter)
            if configured is not None and configured.gateway is not None:
                fail(
                    f"{settings.detection.sites}: meter {meter} is provisioned on {site_id}/{configured.gateway}; "
                    "change its `gateway` there instead",
                    EXIT_USAGE,
                )
    setup_logging(LogLevel.INFO)
    from collector.store import Ledger

    with Ledger(settings.ledger.path) as ledger:
        previous = ledger.move_meter(meter, site, gateway, at=time.time_ns() // 1_000_000)
    was = "no gateway" if previous is None else f"{previous.site}/{previous.gateway}"
    log.warning("meter %s moved from %s to %s/%s", meter, was, site, gateway)


@app.command()
def run(
    config: Annotated[Path, _CONFIG] = Path("collector.yaml"),
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
