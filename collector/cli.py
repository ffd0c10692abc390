"""`kilowatch collector ...`: run the collector from its config file.

FastAPI, uvicorn, aiomqtt and influxdb-client are imported inside the command, so ``kilowatch --help``
stays light and a gateway without the `collector` extra can still run the rest of the command.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from collector.access_cli import keys, users
from collector.config import CollectorConfig
from kilowatch.cli_support import EXIT_CONFIG, LogLevel, fail, load_config, setup_logging
from kilowatch.mqtt_contract import ID_PATTERN

log = logging.getLogger(__name__)
EXIT_USAGE = 2

app = typer.Typer(no_args_is_help=True)
app.add_typer(users, name="users")
app.add_typer(keys, name="keys")


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
        from collector.detectors.config import Sites  # numpy and astral: the collector's, not an agent's

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

    with Ledger(settings.ledger.location) as ledger:
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


report_app = typer.Typer(no_args_is_help=True)
app.add_typer(report_app, name="report", help="The Directive 20 reports for the Department, as files.")


@report_app.command()
def monthly(
    month: Annotated[str, typer.Option("--month", help="The month, YYYY-MM (Vietnam calendar)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The XLSX workbook to write")],
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Collector configuration: its ledger and detection.sites (the units)"
        ),
    ] = Path("collector.yaml"),
) -> None:
    """Write a month's workbook: R3 (the month against the same month last year), the year to date through
    it against the units' targets (R1, R5, R8, R2) and losses (R11), from the ledger's 15-minute intervals."""
    from collector.detectors.config import Sites
    from collector.saving.export import month_reports, workbook
    from collector.saving.weather import TemperatureError
    from collector.store import LedgerReader

    try:
        first = datetime.strptime(month, "%Y-%m").date()
    except ValueError:
        fail(f"--month {month!r}: expected YYYY-MM", EXIT_CONFIG)
    settings = load_config(CollectorConfig, config)
    if settings.detection.sites is None:
        fail(f"{config}: detection.sites names no sites file, so there are no units to report", EXIT_CONFIG)
    sites = load_config(Sites, settings.detection.sites)
    if not sites.units:
        fail(f"{settings.detection.sites}: no units to report", EXIT_CONFIG)
    ledger = settings.ledger.location
    if isinstance(ledger, Path) and not ledger.exists():
        fail(f"{ledger}: no ledger")
    try:
        with LedgerReader(ledger) as reader:
            content = workbook(month_reports(reader, sites, first.year, first.month))
    except TemperatureError as exc:
        fail(f"reporting.temperature_file: {exc}", EXIT_CONFIG)
    out.write_bytes(content)
    typer.echo(f"wrote {out} ({len(sites.units)} units, {month})")


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Collector configuration: its ledger section names the ledger")
]


def _sqlite_ledger(config: Path, command: str) -> Path:
    """The configured SQLite ledger; a PostgreSQL one has the server's own tools (pg_dump, pg_restore)."""
    settings = load_config(CollectorConfig, config).ledger
    if settings.url is not None:
        fail(
            f"{command}: {config} names a PostgreSQL ledger ({settings.location}); back it up with pg_dump "
            "(pg_dump --format=custom) and restore it with pg_restore, which copy a running database consistently",
            EXIT_USAGE,
        )
    return settings.path


@app.command()
def backup(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The copy to write (replaced if it exists)")
    ] = None,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Write kilowatch-<UTC time>.db into this folder instead")
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option("--keep", min=1, help="With --dir: delete the oldest copies beyond this many"),
    ] = None,
    config: ConfigOption = Path("collector.yaml"),
) -> None:
    """Copy the ledger while the collector runs (SQLite's online backup: one consistent state, checked for
    integrity before it is kept)."""
    from collector.backups import rotate
    from collector.store.backup import BackupError
    from collector.store.backup import backup as copy_ledger

    if (out is None) == (folder is None):
        raise typer.BadParameter("give one of them", param_hint="--out/--dir")
    if keep is not None and folder is None:
        raise typer.BadParameter("--keep needs --dir", param_hint="--keep")
    ledger = _sqlite_ledger(config, "backup")
    expired: list[Path] = []
    try:
        if out is not None:
            copy_ledger(ledger, out)
            written = out
        else:
            assert folder is not None
            written, expired = rotate(ledger, folder, keep=keep)
    except (BackupError, OSError) as exc:
        fail(f"backup: {exc}")
    typer.echo(f"backed {ledger} up to {written}")
    for path in expired:
        typer.echo(f"deleted {path} (beyond --keep {keep})")


@app.command()
def restore(
    backup_file: Annotated[Path, typer.Argument(help="A copy written by `kilowatch collector backup`")],
    config: ConfigOption = Path("collector.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Replace the ledger if it exists")] = False,
) -> None:
    """Put a backup in place of the ledger, once it passes the integrity check and its schema version is one
    this release can open. Refused while a collector (or anything else) has the ledger open: stop it first."""
    from collector.store.backup import BackupError
    from collector.store.backup import restore as put_back

    ledger = _sqlite_ledger(config, "restore")
    try:
        found = put_back(backup_file, ledger, replace=force)
    except BackupError as exc:
        fail(f"restore: {exc}")
    typer.echo(f"restored {backup_file} (schema version {found}) to {ledger}")
