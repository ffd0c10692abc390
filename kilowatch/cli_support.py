"""Small helpers every sub-command shares: turning known errors into exit codes and messages."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, TypeVar

import typer
from pydantic import BaseModel

from kilowatch import yamlconfig

M = TypeVar("M", bound=BaseModel)

EXIT_CONFIG = 2
"""Exit code for unusable configuration or data files (the same code typer uses for bad arguments)."""


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_config(model: type[M], path: Path) -> M:
    """Load a YAML config or exit 2 with one line per problem, each naming file, line and key."""
    try:
        return yamlconfig.load(model, path)
    except yamlconfig.ConfigError as exc:
        fail(f"{path}: invalid configuration\n" + "\n".join(f"  {p}" for p in exc.problems), EXIT_CONFIG)
