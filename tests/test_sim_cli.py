"""`kilowatch sim serve` as users and the demo run it: a real process, real signals, real Modbus masters."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app, parse_units
from tests.mbpoll import read_floats
from tests.services import Process, wait_until

SERVING = re.compile(
    r"^serving 2 meters \(eastron-sdm630, units 1,3\) on tcp 127\.0\.0\.1:(\d+)$", re.MULTILINE
)


def start_sim(tmp_path: Path, *args: str) -> Process:
    return Process(
        "sim", [sys.executable, "-m", "kilowatch", "sim", "serve", *args], tmp_path / "sim.log"
    ).start()


@pytest.mark.services
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_announces_itself_serves_mbpoll_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    sim = start_sim(
        tmp_path, "--profile", "sdm630", "--units", "1,3", "--tcp", "127.0.0.1:0",
        "--seed", "5", "--speed", "10", "--start", "2025-03-03T09:00:00+07:00",
    )  # fmt: skip
    try:
        line = wait_until(lambda: SERVING.search(sim.log()) or not sim.alive(), 30, "the 'serving' line")
        assert sim.alive(), sim.log()
        port = int(line.group(1))
        voltages = read_floats("127.0.0.1", port, 3, 0x0000, 3)
        assert all(200 < v < 240 for v in voltages)
        assert sim.proc is not None
        sim.proc.send_signal(stop_signal)
        assert sim.proc.wait(timeout=20) == 0, sim.log()
    finally:
        sim.stop()


@pytest.mark.services
def test_an_unknown_profile_exits_2_and_lists_the_shipped_ones(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, "--profile", "acme-9000", "--tcp", "127.0.0.1:0")
    assert sim.proc is not None
    assert sim.proc.wait(timeout=30) == 2
    assert "no device profile 'acme-9000'" in sim.log()
    assert "eastron-sdm630" in sim.log()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--units", "3-1"], "--units"),
        (["--units", "1,x"], "'x' is not a unit id"),
        (["--units", "1-3,2"], "listed twice: [2]"),
        (["--units", "0"], "1-247"),
        (["--tcp", "127.0.0.1"], "--tcp"),
        (["--tcp", "127.0.0.1:99999"], "is not HOST:PORT"),
        (["--start", "2025-03-03T09:00:00"], "no timezone"),
        (["--start", "Monday"], "not an ISO 8601 time"),
        (["--speed", "0"], "--speed"),
        (["--update-interval", "-1"], "--update-interval"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--profile", "eastron-sdm630", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output  # rich wraps long messages


def test_a_port_in_use_exits_1_with_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--profile", "sdm630", "--tcp", f"127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.output


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("1", [1]),
        ("1-3", [1, 2, 3]),
        ("1,2,5", [1, 2, 5]),
        ("1-3,7", [1, 2, 3, 7]),
        (" 4 , 9-10 ", [4, 9, 10]),
    ],
)
def test_unit_lists(text: str, units: list[int]) -> None:
    assert parse_units(text) == units
