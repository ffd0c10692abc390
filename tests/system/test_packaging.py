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


FINDING_THE_RUN = """
import typer
import typer.main
from app.cli import app
root = typer.main.get_command(app)
group = root.get_command(typer.Context(root), "agent")
group.get_command(typer.Context(group), "run")
"""
"""What `kilowatch agent run` imports before it execs the runtime: the command found as click finds it."""

RUNTIME = "import agent.__main__\n"
"""What the running agent imports: ``python -m agent``, which `kilowatch agent run` execs."""

NOT_FOR_THE_RUN = (
    "collector", "sim", "app.demo", "app.evaluation", "app.provision_cli", "app.schemas_cli", "app.processes",
    "kilowatch.profiles_cli", "agent.scan", "agent.plan_report", "agent.doctor", "pymodbus", "rich",
)  # fmt: skip
"""Modules the running agent has no use for: other parts' commands, the agent's other commands, pymodbus
(a Modbus TCP bus needs none; an RTU bus imports it when it opens) and rich (tables of the other commands)."""

THE_CLI = ("app", "app.cli", "agent.cli", "typer", "click")
"""The `kilowatch` command's modules and libraries, which the runtime leaves behind."""


def test_finding_the_agent_run_imports_no_other_part() -> None:
    assert imported_after(FINDING_THE_RUN, NOT_FOR_THE_RUN) == []


def test_the_agent_run_imports_nothing_it_does_not_run() -> None:
    assert imported_after(RUNTIME, (*NOT_FOR_THE_RUN, *THE_CLI)) == []


def test_the_agent_run_builds_no_model_validator_at_import() -> None:
    """The config, profile and MQTT models build their validators on first use, so a process holds only
    those it uses."""
    code = RUNTIME + (
        "from agent.config import AgentConfig, Meter\nfrom kilowatch.profiles import Profile, TestVector\n"
        "from kilowatch.mqtt_contract import GatewayEvent, ReadingsBatch\nfrom kilowatch.broker import BrokerSettings\n"
        "models = (AgentConfig, Meter, Profile, TestVector, GatewayEvent, ReadingsBatch, BrokerSettings)\n"
        "print(','.join(m.__name__ for m in models if m.__pydantic_complete__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
