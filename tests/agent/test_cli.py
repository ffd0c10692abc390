"""`kilowatch agent read` and `kilowatch agent run` as processes, against the simulator and Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from agent.cli import app
from app.processes import Mosquitto, free_port
from kilowatch.cli_support import parse_host_port
from kilowatch.mqtt_contract import (
    Channel,
    ClockState,
    GatewayState,
    GatewayStatus,
    Quality,
    ReadingsBatch,
    topic,
)
from kilowatch.profiles import load_builtin
from sim.server import SimServer
from tests.agent_support import kilowatch, payload

SDM = load_builtin("eastron-sdm630")
STATUS = topic("s1", "g1", Channel.STATUS)
READINGS = topic("s1", "g1", Channel.READINGS)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(profile=SDM, units=[1, 2, 3], port=0) as server:
        yield server


async def test_read_json_from_a_simulated_meter(sim: SimServer) -> None:
    code, out, err = await kilowatch(
        "agent", "read", "--tcp", f"127.0.0.1:{sim.port}", "--unit", "2", "--profile", "sdm630", "--json"
    )
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert list(result) == ["profile", "unit", "ts", "values"]
    assert (result["profile"], result["unit"]) == ("eastron-sdm630", 2)
    assert result["ts"].endswith("Z")
    assert datetime.fromisoformat(result["ts"]).tzinfo == UTC
    assert set(result["values"]) == {reg.quantity for reg in SDM.registers}
    shown = sim.values(2)
    assert result["values"]["energy_import_kwh"] == pytest.approx(shown["energy_import_kwh"], rel=1e-3)
    assert 180 < result["values"]["voltage_l1_v"] < 260


async def test_read_prints_a_table_with_units(sim: SimServer) -> None:
    code, out, _ = await kilowatch(
        "agent", "read", "--tcp", f"127.0.0.1:{sim.port}", "--unit", "1", "--profile", "sdm630"
    )
    assert code == 0
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if "_" in line]
    rows = {name: rest for name, *rest in cells}
    assert set(rows) == {reg.quantity for reg in SDM.registers}
    value, unit, quality = rows["energy_import_kwh"]
    assert (float(value) > 0, unit, quality) == (True, "kWh", "good")
    assert rows["voltage_l1_v"][1:] == ["V", "good"]


async def test_read_from_a_unit_that_is_not_there_is_one_clear_line(sim: SimServer) -> None:
    code, out, err = await kilowatch(
        "agent", "read", "--tcp", f"127.0.0.1:{sim.port}", "--unit", "9", "--profile", "sdm630"
    )
    assert (code, out) == (1, "")
    assert err == (
        f"cannot read the meter: bus '127.0.0.1:{sim.port}' unit 9: exception 11 "
        "(gateway target device failed to respond) reading register 0x0000\n"
    )


def test_read_from_a_closed_port_is_one_clear_line() -> None:
    port = free_port()
    result = CliRunner().invoke(
        app, ["read", "--tcp", f"127.0.0.1:{port}", "--unit", "1", "--profile", "sdm630"]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"cannot read the meter: bus '127.0.0.1:{port}' unavailable: cannot connect to 127.0.0.1:{port}\n"
    )


@pytest.mark.parametrize("endpoint", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":502"])
def test_read_refuses_a_bad_endpoint_with_exit_2(endpoint: str) -> None:
    result = CliRunner().invoke(app, ["read", "--tcp", endpoint, "--unit", "1", "--profile", "sdm630"])
    assert result.exit_code == 2
    assert "--tcp" in result.stderr


def test_parse_host_port() -> None:
    assert parse_host_port("meter.local:5020") == ("meter.local", 5020)
    assert parse_host_port("[::1]:502") == ("::1", 502)


def agent_config(path: Path, modbus_port: int, mqtt_port: int) -> Path:
    path.write_text(
        f"site: s1\ngateway: g1\npoll_interval_s: 0.2\n"
        f"mqtt: {{port: {mqtt_port}, keepalive_s: 5}}\nclock: {{mode: unsynced}}\n"
        f"buses:\n  - {{name: panel, transport: tcp, host: 127.0.0.1, port: {modbus_port}, meters: [\n"
        "      {id: main, profile: eastron-sdm630, unit: 1},\n"
        "      {id: absent, profile: sdm630, unit: 7},\n"
        "      {id: hvac, profile: sdm630, unit: 3}]}\n"
    )
    return path


async def start_agent(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "agent", "run", "--config", str(config),
            "--log-level", "DEBUG", stdout=out, stderr=out,
        )  # fmt: skip


async def until_offline(client: aiomqtt.Client) -> tuple[list[ReadingsBatch], list[GatewayStatus]]:
    """Batches and statuses received until the gateway is reported offline."""
    batches, statuses = [], []
    async with asyncio.timeout(30):
        async for message in client.messages:
            if str(message.topic) == READINGS:
                batches.append(ReadingsBatch.model_validate_json(payload(message)))
            else:
                statuses.append(GatewayStatus.model_validate_json(payload(message)))
                if statuses[-1].state is GatewayState.OFFLINE:
                    return batches, statuses
    raise AssertionError("unreachable")


async def first_batch(client: aiomqtt.Client) -> ReadingsBatch:
    async with asyncio.timeout(30):
        async for message in client.messages:
            if str(message.topic) == READINGS:
                return ReadingsBatch.model_validate_json(payload(message))
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def agent_and_subscriber(
    sim: SimServer, mosquitto: Mosquitto, tmp_path: Path
) -> AsyncIterator[tuple[aiomqtt.Client, asyncio.subprocess.Process, ReadingsBatch]]:
    """`kilowatch agent run` as a process, a subscriber on its topics, and its first batch."""
    config = agent_config(tmp_path / "agent.yaml", sim.port, mosquitto.port)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(STATUS, qos=1)
        await sub.subscribe(READINGS, qos=1)
        agent = await start_agent(config, tmp_path / "agent.log")
        yield sub, agent, await first_batch(sub)


@pytest.mark.services
async def test_run_publishes_real_readings_and_goes_offline_on_sigterm(
    sim: SimServer, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with agent_and_subscriber(sim, mosquitto, tmp_path) as (sub, agent, batch):
        cmdline = await asyncio.to_thread(Path(f"/proc/{agent.pid}/cmdline").read_bytes)
        agent.send_signal(signal.SIGTERM)
        batches, statuses = await until_offline(sub)
        code = await asyncio.wait_for(agent.wait(), 30)
    log = (tmp_path / "agent.log").read_text()
    assert code == 0, log
    assert cmdline.split(b"\0")[1:4] == [
        b"-P",
        b"-m",
        b"agent",
    ]  # the command execs the runtime alone, in the same process
    main, absent, hvac = batch.readings
    assert [r.meter for r in batch.readings] == ["main", "absent", "hvac"]
    assert (main.quality, hvac.quality, main.clock) == (Quality.GOOD, Quality.GOOD, ClockState.UNSYNCED)
    assert set(main.values) == {reg.quantity for reg in SDM.registers}
    assert main.values["energy_import_kwh"] > hvac.values["energy_import_kwh"] > 0  # unit 1 is the main meter
    assert (absent.values, absent.quality) == ({}, Quality.ERROR)
    assert [b.seq for b in batches] == list(range(batch.seq + 1, batch.seq + 1 + len(batches)))
    assert statuses[-1].state is GatewayState.OFFLINE
    assert "meter absent: bus 'panel' unit 7: exception 11" in log
    assert "cycle seq 0: 3 readings, 1 with errors" in log


@pytest.mark.services
async def test_a_killed_agent_is_reported_offline_by_its_last_will(
    sim: SimServer, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with agent_and_subscriber(sim, mosquitto, tmp_path) as (sub, agent, _):
        agent.kill()
        await agent.wait()
        _, statuses = await until_offline(sub)
    assert statuses[-1].state is GatewayState.OFFLINE
    assert "stopped" not in (tmp_path / "agent.log").read_text()  # it never had the chance to say goodbye


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ([], "--config FILE is required"),
        (["--config", "agent.yaml", "--log-level", "verbose"], "--log-level 'VERBOSE' is not one of"),
        (["--config", "agent.yaml", "extra"], "unexpected argument 'extra'"),
        (["--config", "agent.yaml", "--verbose"], "option --verbose not recognized"),
    ],
)
async def test_the_runtime_refuses_bad_options_with_its_usage(args: list[str], problem: str) -> None:
    """`python -m agent` (what `kilowatch agent run` execs) parses its own options."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, out) == (2, b"")
    assert err.decode().startswith("usage: python -m agent --config FILE")
    assert problem in err.decode()


async def test_the_runtime_explains_its_options() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert "-c, --config FILE" in out.decode()
