"""`kilowatch agent scan` against the simulator over real TCP sockets and a socat serial line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.errors import BusUnavailable
from agent.scan import ScanReport, scan, serial_links
from agent.transport import TcpLink
from kilowatch.profiles import builtin_ids, load_builtin
from sim.faults import Fault, FaultKind
from sim.server import SimServer
from tests.agent_support import kilowatch
from tests.serial_link import SerialLink

SDM = load_builtin("eastron-sdm630")
PROFILES = [SDM, *(load_builtin(pid) for pid in builtin_ids() if pid != SDM.id)]
"""Every shipped profile, the SDM630 first so that its fingerprint's first register is the probe."""
REFUSING = Fault(kind=FaultKind.EXCEPTION, code=2)
GARBAGE = Fault(kind=FaultKind.GARBAGE)


def _found(report: ScanReport) -> list[tuple[str, int, str | None, str]]:
    return [(f.transport, f.unit, f.model, f.answer) for f in report.found]


async def test_tcp_scan_finds_the_served_units_and_names_the_model() -> None:
    faults = {5: REFUSING, 6: GARBAGE}
    async with SimServer(profile=SDM, units=[1, 2, 3, 5, 6], port=0, faults=faults) as sim:
        done: list[int] = []
        where = f"127.0.0.1:{sim.port}"
        report = await scan(
            [TcpLink("127.0.0.1", sim.port)], range(1, 9), PROFILES, timeout_s=0.5, progress=done.append
        )
    assert _found(report) == [
        (where, 1, "eastron-sdm630", "registers"),
        (where, 2, "eastron-sdm630", "registers"),
        (where, 3, "eastron-sdm630", "registers"),
        # It answers, so it is on the bus; it refuses the SDM630's registers, so it is not one.
        (where, 5, None, "exception 2 (illegal data address)"),
        # It answers registers, but random words are no 50 Hz mains.
        (where, 6, None, "registers"),
    ]
    assert (report.skipped, sum(done)) == ([], 8)


async def test_rtu_scan_tries_each_combination_and_skips_a_refused_parity(serial_link: SerialLink) -> None:
    async with SimServer(profile=SDM, units=[2, 5], rtu=str(serial_link.a), faults={5: GARBAGE}):
        done: list[int] = []
        links = serial_links(str(serial_link.b), [9600, 19200], ["N", "E", "O"])
        report = await scan(links, range(1, 9), PROFILES, timeout_s=0.05, progress=done.append)
    # A pseudo-terminal passes bytes at any baud rate, so both rates find the units; it refuses parity
    # (even parity when the port opens, odd parity on some opens only: both paths are covered).
    assert _found(report) == [
        (f"{serial_link.b} at {baud} 8N1", unit, model, "registers")
        for baud in (9600, 19200)
        for unit, model in ((2, "eastron-sdm630"), (5, None))
    ]
    assert [s.transport for s in report.skipped] == [
        f"{serial_link.b} at {baud} 8{parity}1" for baud in (9600, 19200) for parity in "EO"
    ]
    assert all(s.reason.startswith("the port refuses") for s in report.skipped)
    assert sum(done) == 6 * 8


async def test_a_missing_or_busy_port_stops_the_scan(serial_link: SerialLink, tmp_path: Path) -> None:
    with pytest.raises(BusUnavailable, match="no such serial port"):
        await scan(serial_links(str(tmp_path / "ttyNOPE"), [9600], ["N"]), [1], PROFILES)
    async with SimServer(profile=SDM, units=[1], rtu=str(serial_link.a)):
        with pytest.raises(BusUnavailable, match="busy"):
            await scan(serial_links(str(serial_link.a), [9600], ["N"]), [1], PROFILES)


async def test_cli_prints_json_of_the_units_that_answered() -> None:
    async with SimServer(profile=SDM, units=[2], port=0) as sim:
        code, out, err = await kilowatch(
            "agent", "scan", "--tcp", f"127.0.0.1:{sim.port}", "--units", "1-3", "--json"
        )
    assert (code, err) == (0, "")
    report = json.loads(out)
    # The probe reads the first shipped profile's register, which an SDM630 may answer or refuse.
    assert report["found"][0].pop("answer") in {"registers", "exception 2 (illegal data address)"}
    assert report == {
        "found": [{"transport": f"127.0.0.1:{sim.port}", "unit": 2, "model": "eastron-sdm630"}],
        "skipped": [],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tcp", "127.0.0.1:5020", "--units", "1-300"], "--units '1-300': '1-300': unit ids are 1-247"),
        (["--tcp", "127.0.0.1:5020", "--units", "0"], "--units '0': '0': unit ids are 1-247"),
        (["--tcp", "127.0.0.1:5020", "--units", "1,x"], "--units '1,x': 'x' is not a unit id"),
        (["--tcp", "127.0.0.1:5020", "--units", "1", "--baud", "9600"], "--baud and --parity apply to --rtu"),
        (["--units", "1"], "give exactly one of --tcp HOST:PORT and --rtu DEVICE"),
        (["--rtu", "/dev/ttyS0", "--units", "1", "--parity", "N,X"], "--parity 'N,X': give N, E or O"),
        (["--rtu", "/dev/ttyS0", "--units", "1", "--baud", "9600,fast"], "--baud '9600,fast': give positive"),
        (["--rtu", "/nonexistent/tty", "--units", "1"], "/nonexistent/tty: no such serial port"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["scan", *args])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert message in line


async def test_cli_reports_a_refused_connection_with_exit_2() -> None:
    async with SimServer(profile=SDM, units=[1], port=0) as sim:
        port = sim.port
    code, out, err = await kilowatch("agent", "scan", "--tcp", f"127.0.0.1:{port}", "--units", "1")
    assert (code, out) == (2, "")
    assert err.strip() == f"bus '127.0.0.1:{port}' unavailable: cannot connect to 127.0.0.1:{port}"
