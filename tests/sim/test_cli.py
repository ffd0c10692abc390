"""`kilowatch sim serve` as users and the demo run it: a real process, real signals, real Modbus masters."""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.processes import Process, wait_until
from kilowatch.cli_support import parse_units
from sim.cli import app
from tests.mbpoll import MbpollError, read_floats, read_floats_rtu
from tests.serial_link import serial_pair

SERVING = re.compile(
    r"^serving 2 meters \(eastron-sdm630, units 1,3\) on tcp 127\.0\.0\.1:(\d+)$", re.MULTILINE
)


def start_sim(tmp_path: Path, *args: str) -> Process:
    return Process("sim", [sys.executable, "-m", "app", "sim", "serve", *args], tmp_path / "sim.log").start()


@pytest.mark.services
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_announces_itself_serves_mbpoll_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    sim = start_sim(
        tmp_path, "--profile", "sdm630", "--units", "1,3", "--tcp", "127.0.0.1:0",
        "--seed", "5", "--speed", "10", "--start", "2025-03-03T09:00:00+07:00",
        "--served-log", str(tmp_path / "served.log"),
    )  # fmt: skip
    try:
        line = wait_until(lambda: SERVING.search(sim.log()) or not sim.alive(), 30, "the 'serving' line")
        assert sim.alive(), sim.log()
        port = int(line.group(1))
        before = time.time_ns() // 1_000_000
        voltages = read_floats("127.0.0.1", port, 3, 0x0000, 3)
        assert all(200 < v < 240 for v in voltages)
        [served] = (tmp_path / "served.log").read_text().splitlines()
        unit, function, address, count, when = map(int, served.split())
        assert (unit, function, address, count) == (3, 4, 0x0000, 6)
        assert before <= when <= time.time_ns() // 1_000_000
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
        (["--fault", "2:dead"], "faults for units that are not served: [2]"),
        (["--fault", "1:boom"], "unknown fault 'boom'"),
        (["--fault", "1:slow"], "'1:slow': fault 'slow' needs seconds"),
        (["--units", "1-2", "--fault", "1:dead", "--fault", "1:garbage"], "unit 1 has two faults"),
        (["--fault", "1:crc"], "needs RTU framing"),
        (["--tcp", "127.0.0.1:0", "--rtu", "/dev/ttyS9"], "exclude each other"),
        (["--rtu-over-tcp", "localhost"], "--rtu-over-tcp"),
        (["--rtu", "/dev/ttyS9", "--parity", "X"], "--parity"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--profile", "eastron-sdm630", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output  # rich wraps long messages


@pytest.mark.services
def test_serve_rtu_with_faults_announces_the_line_and_mbpoll_reads_it(tmp_path: Path) -> None:
    with serial_pair(tmp_path / "serial") as link:
        sim = start_sim(
            tmp_path, "--profile", "sdm630", "--units", "1-3", "--rtu", str(link.a), "--baud", "19200",
            "--parity", "n", "--fault", "2:dead", "--fault", "3:exception=6",
        )  # fmt: skip
        try:
            ready = f"serving 3 meters (eastron-sdm630, units 1,2,3) on rtu {link.a} at 19200 8N1"
            wait_until(lambda: ready in sim.log() or not sim.alive(), 30, "the 'serving' line")
            assert sim.alive(), sim.log()
            voltages = read_floats_rtu(str(link.b), 1, 0x0000, 3, baud=19200)
            assert all(200 < v < 240 for v in voltages)
            with pytest.raises(MbpollError, match="timed out"):
                read_floats_rtu(str(link.b), 2, 0x0000, 1, baud=19200, timeout_s=0.5)
            with pytest.raises(MbpollError, match="Slave device or server is busy"):
                read_floats_rtu(str(link.b), 3, 0x0000, 1, baud=19200)
        finally:
            sim.stop()


def test_a_missing_serial_port_exits_1_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--profile", "sdm630", "--rtu", str(tmp_path / "ttyUSB7")])
    assert result.exit_code == 1
    assert f"rtu {tmp_path / 'ttyUSB7'} at 9600 8N1" in " ".join(result.output.split())


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


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--units", "1-3"], "--units"),
        (["--rtu", "/dev/ttyS9"], "--rtu"),
        (["--fault", "1:dead"], "--fault"),
        (["--seed", "3"], "--seed"),
        (["--profile", "eastron-sdm630"], "--profile"),
    ],
)
def test_a_scenario_refuses_the_options_of_one_profile_line(args: list[str], flag: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--scenario", "office-lang-son", *args])
    assert result.exit_code == 2
    assert flag in " ".join(result.output.split()), result.output
