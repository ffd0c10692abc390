"""Small helpers every sub-command shares: turning known errors into exit codes and messages.

typer is imported only when a command fails: the agent's runtime (``python -m agent``) uses this module
without the CLI's libraries.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import NoReturn, TypeVar

from pydantic import BaseModel

from kilowatch import yamlconfig
from kilowatch.profiles import MAX_UNIT

M = TypeVar("M", bound=BaseModel)

EXIT_CONFIG = 2
"""Exit code for unusable configuration or data files (the same code typer uses for bad arguments)."""


def fail(message: str, code: int = 1) -> NoReturn:
    import typer

    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_config(model: type[M], path: Path) -> M:
    """Load a YAML config or exit 2 with one line per problem, each naming file, line and key."""
    try:
        return yamlconfig.load(model, path)
    except yamlconfig.ConfigError as exc:
        fail(config_problems(path, exc), EXIT_CONFIG)


def config_problems(path: Path, exc: yamlconfig.ConfigError) -> str:
    """What :func:`load_config` says of an unusable file: its name, then one line per problem."""
    return f"{path}: invalid configuration\n" + "\n".join(f"  {p}" for p in exc.problems)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def setup_logging(level: LogLevel) -> None:
    """One log format for every long-running command."""
    logging.basicConfig(level=level.value, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level is not LogLevel.DEBUG:
        # Every pymodbus failure reaches us as an exception that we log with bus, unit and address.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def parse_host_port(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ValueError saying what is wrong.

    `allow_zero` admits port 0 (the operating system picks a free port) for servers.
    """
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    lowest = 0 if allow_zero else 1
    if not sep or not host or not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ValueError(
            f"{text!r} is not HOST:PORT with a port from {lowest} to 65535 (e.g. 127.0.0.1:5020)"
        )
    return host, int(port_text)


def parse_units(text: str) -> list[int]:
    """Unit ids from `1-3`, `1,2,5` or `1-3,7`, in order, each 1-247 and listed once."""
    units: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a unit id or a range like 1-3") from None
        if not 1 <= low <= high <= MAX_UNIT:
            raise ValueError(f"{part.strip()!r}: unit ids are 1-{MAX_UNIT} and a range runs low-high")
        units.extend(range(low, high + 1))
    duplicates = sorted({u for u in units if units.count(u) > 1})
    if duplicates:
        raise ValueError(f"unit ids listed twice: {duplicates}")
    return units
