"""`kilowatch profiles ...`: inspect and check device profiles; the JSON Schemas `kilowatch schemas` exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kilowatch import yamlconfig
from kilowatch.cli_support import EXIT_CONFIG, fail
from kilowatch.mqtt_contract import MESSAGES
from kilowatch.profiles import Profile, Table, builtin_dir, builtin_ids, load_builtin
from kilowatch.quantities import QUANTITIES
from kilowatch.registers import WordOrder

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
    """Show one profile's register map, its parameters and how each value is scaled."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    p = _get(profile_id)
    console.print(
        f"[bold]{p.id}[/bold]: {p.manufacturer} {p.model} ({p.phases}-phase{', ' + p.wiring if p.wiring else ''})"
        f"\nsource: {' '.join(p.source.split())}"
    )
    table = RichTable("quantity", "unit", "table", "address", "manual", "type", "order", "scale", "also x")
    for r in p.registers:
        factors = [
            f"10^{r.scale_factor}" if r.scale_factor else "",
            "CT" if r.ct_scaled else "",
            "VT" if r.vt_scaled else "",
        ]
        table.add_row(
            r.quantity,
            QUANTITIES[r.quantity].unit,
            r.table.value,
            f"{r.address:#06x}",
            str(r.manual_address or ""),
            r.type.value,
            r.word_order.value,
            f"{r.scale:g}",
            " ".join(f for f in factors if f),
        )
    console.print(table)
    if p.parameters:
        params = RichTable("parameter", "table", "address", "type", "scale", "typical value")
        for q in p.parameters:
            params.add_row(
                q.name, q.table.value, f"{q.address:#06x}", q.type.value, f"{q.scale:g}", f"{q.value:g}"
            )
        console.print(params)


@app.command()
def check(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Profile files to check (default: every shipped profile)")
    ] = None,
) -> None:
    """Validate profiles, decode their test vectors and try every fingerprint on every map; exit 2 on any
    problem, each named by file, line and key with its likely cause."""
    from kilowatch.profile_library import (
        completeness_problems,
        fingerprint_problems,
        load_entries,
        name_problems,
        vector_problems,
    )

    entries, problems = load_entries(files or sorted(builtin_dir().glob("*.yaml")))
    for entry in entries:
        failures = completeness_problems(entry) + vector_problems(entry)
        problems.extend(failures)
        if not failures:
            typer.echo(
                f"ok  {entry.path.name}: {len(entry.profile.registers)} registers, "
                f"{len(entry.profile.test_vectors)} test vectors"
            )
    problems.extend(name_problems(entries))
    problems.extend(fingerprint_problems(entries))
    if problems:
        fail("\n".join(problems), EXIT_CONFIG)


@app.command()
def new(
    csv_file: Annotated[Path, typer.Option("--csv", help="Register table copied from the manual, as CSV")],
    profile_id: Annotated[str, typer.Option("--id", help="Profile id, also the file name")],
    manufacturer: Annotated[str, typer.Option(help="Manufacturer as printed on the meter")],
    model: Annotated[str, typer.Option(help="Model name")],
    source: Annotated[str, typer.Option(help="Manual title, version and table the CSV was copied from")],
    table: Annotated[
        Table | None,
        typer.Option(help="Table of every row (default: from 3xxxx/4xxxx addresses, else input)"),
    ] = None,
    word_order: Annotated[WordOrder, typer.Option(help="Word order of 32/64-bit rows")] = WordOrder.ABCD,
    out: Annotated[
        Path | None, typer.Option(help="File to write (default: device_profiles/ID.yaml); never overwritten")
    ] = None,
) -> None:
    """Scaffold a profile from a manual's register table.

    The CSV needs a header row with `quantity` (or `name`), `address` and `type` columns, and may have
    `unit`, `scale`, `word_order` and `table`. Units with another prefix (Wh for kWh) set the scale.
    Then complete the file and run `kilowatch profiles check` on it.
    """
    from kilowatch.profile_library import scaffold

    try:
        text = csv_file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{csv_file}: cannot read: {exc.strerror or exc}", EXIT_CONFIG)
    made = scaffold(
        text, profile_id=profile_id, manufacturer=manufacturer, model=model, source=source, table=table,
        word_order=word_order,
    )  # fmt: skip
    path = out or builtin_dir() / f"{profile_id}.yaml"
    if path.exists():
        fail(f"{path} exists; give another --out or remove it", EXIT_CONFIG)
    path.write_text(made.text, encoding="utf-8")
    for warning in made.warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    typer.echo(
        f"wrote {path}: {made.text.count('  - {quantity:')} registers; now add test vectors and a fingerprint"
    )


@app.command()
def docs(
    out: Annotated[Path, typer.Option(help="Page to write")] = Path("docs/meters.md"),
    check_only: Annotated[
        bool, typer.Option("--check", help="Only report whether the page is out of date")
    ] = False,
) -> None:
    """Write the page of supported meters from the shipped profiles."""
    from kilowatch.profile_library import meters_markdown

    text = meters_markdown([_get(pid) for pid in builtin_ids()])
    if out.exists() and out.read_text(encoding="utf-8") == text:
        return
    if check_only:
        fail(f"{out} is out of date (run `kilowatch profiles docs`)", EXIT_CONFIG)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}")


def schema_documents() -> dict[str, dict[str, object]]:
    """Every published JSON Schema by its path under docs/."""
    docs: dict[str, dict[str, object]] = {
        f"mqtt/{stem}.schema.json": model.model_json_schema() for stem, model in MESSAGES.items()
    }
    docs["device-profile.schema.json"] = Profile.model_json_schema()
    return docs
