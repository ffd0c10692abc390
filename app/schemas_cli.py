"""`kilowatch schemas`: every generated document (JSON Schemas, sample configurations) written or checked.

It decides which model becomes which sample file, so it imports the agent's and the collector's config
models (inside the function: the collector's pull in numpy and holidays, which a gateway with only the
`agent` extra lacks); the renderer itself (:mod:`kilowatch.config_example`) knows none of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from kilowatch.cli_support import fail
from kilowatch.config_example import render
from kilowatch.profiles_cli import schema_documents


def examples() -> dict[str, tuple[type[BaseModel], str]]:
    """Each sample configuration under deploy/, by file name: its model and its title."""
    from agent.config import AgentConfig
    from collector.config import CollectorConfig
    from collector.detectors.config import Sites

    return {
        "agent.example.yaml": (
            AgentConfig,
            "kilowatch agent configuration: one file per gateway.\n"
            "Run with: kilowatch agent run --config agent.yaml",
        ),
        "collector.example.yaml": (
            CollectorConfig,
            "kilowatch collector configuration.\nRun with: kilowatch collector run --config collector.yaml",
        ),
        "sites.example.yaml": (
            Sites,
            "kilowatch detection settings: the file `detection.sites` in collector.yaml names.",
        ),
    }


def generated_files(docs: Path, deploy: Path) -> dict[Path, str]:
    """The text of every generated file, by its path."""
    files = {
        docs / name: json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in schema_documents().items()
    }
    files.update({deploy / name: render(model, title=title) for name, (model, title) in examples().items()})
    return files


def schemas(
    out: Annotated[Path, typer.Option(help="Docs folder to write the JSON Schemas into")] = Path("docs"),
    deploy: Annotated[Path, typer.Option(help="Folder to write the sample configurations into")] = Path(
        "deploy"
    ),
    check_only: Annotated[
        bool, typer.Option("--check", help="Only report files that are out of date")
    ] = False,
) -> None:
    """Export the JSON Schemas of the MQTT messages and device profiles into the docs, and the sample
    configurations (generated from the config models' field descriptions) into deploy/."""
    stale = []
    for path, text in generated_files(out, deploy).items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(str(path))
        if not check_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {path}")
    if check_only and stale:
        fail("out of date (run `kilowatch schemas`): " + ", ".join(stale))
