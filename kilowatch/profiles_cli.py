"""`kilowatch profiles ...`: inspect and check device profiles; the JSON Schemas `kilowatch schemas` exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kilowatch import yamlconfig
from kilowatch.cli_support import EXIT_CONFIG, fail
from kilowatch.mqtt_contract import MESSAGES
from kilowatch.profiles import Profile, builtin_dir, builtin_ids, load_builtin, load_file, vector_failures
from kilowatch.quantities import QUANTITIES

app = typer.Typer(no_args_is_help=True)


def _get(profile_id: str) -> Profile:
    try:
        return load_builtin(profile_id)
    except KeyError as exc:
        fail(str(exc.args[0]), EXIT_CONFIG)
    except yamlconfig.ConfigError as exc:
        fail("\n".join(exc.problems), EXIT_CONFIG)


@app.command("list")
def list_profiles() -> None:
    """List the shipped device profiles."""
    from rich.console import Console
    from rich.table import Table as RichTable

    table = RichTable("id", "manufacturer", "model", "aliases", "registers")
    for profile_id in builtin_ids():
        p = _get(profile_id)
        table.add_row(p.id, p.manufacturer, p.model, ", ".join(p.aliases), str(len(p.registers)))
    Console().print(table)


@app.command()
def show(profile_id: Annotated[str, typer.Argument(help="Profile id or alias")]) -> None:
    """Show one profile's register map."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    p = _get(profile_id)
    console.print(f"[bold]{p.id}[/bold]: {p.manufacturer} {p.model}\nsource: {p.source}")
    table = RichTable("quantity", "unit", "table", "address", "manual", "type", "order", "scale")
    for r in p.registers:
        table.add_row(
            r.quantity,
            QUANTITIES[r.quantity].unit,
            r.table.value,
            f"{r.address:#06x}",
            str(r.manual_address or ""),
            r.type.value,
            r.word_order.value,
            f"{r.scale:g}",
        )
    console.print(table)


@app.command()
def check(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Profile files to check (default: every shipped profile)")
    ] = None,
) -> None:
    """Validate profiles and decode their test vectors; exit 2 on any problem."""
    paths = files or sorted(builtin_dir().glob("*.yaml"))
    problems: list[str] = []
    for path in paths:
        try:
            profile = load_file(path)
        except yamlconfig.ConfigError as exc:
            problems.extend(exc.problems)
            continue
        failures = vector_failures(profile)
        problems.extend(failures)
        if not failures:
            typer.echo(
                f"ok  {path.name}: {len(profile.registers)} registers, "
                f"{len(profile.test_vectors)} test vectors"
            )
    if problems:
        fail("\n".join(problems), EXIT_CONFIG)


def schema_documents() -> dict[str, dict[str, object]]:
    """Every published JSON Schema by its path under docs/."""
    docs: dict[str, dict[str, object]] = {
        f"mqtt/{stem}.schema.json": model.model_json_schema() for stem, model in MESSAGES.items()
    }
    docs["device-profile.schema.json"] = Profile.model_json_schema()
    return docs
