"""The `agent` extra stays light: the CLI and the agent import nothing the gateway does not install."""

from __future__ import annotations

import subprocess
import sys

import pytest

COLLECTOR_ONLY = (
    "fastapi", "uvicorn", "influxdb_client", "prometheus_client", "amqtt", "aiohttp", "argon2", "jinja2",
    "cryptography", "openpyxl", "numpy", "holidays", "astral", "psycopg",
)  # fmt: skip


def imported_after(code: str, modules: tuple[str, ...]) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return [m for m in result.stdout.strip().split(",") if m]


def test_kilowatch_help_imports_no_heavy_library() -> None:
    assert imported_after("import app.cli", (*COLLECTOR_ONLY, "pymodbus", "aiomqtt")) == []


@pytest.mark.parametrize("module", ["agent.runner", "agent.cli", "agent.publisher", "agent.transport"])
def test_agent_needs_no_collector_library(module: str) -> None:
    assert imported_after(f"import {module}", COLLECTOR_ONLY) == []
