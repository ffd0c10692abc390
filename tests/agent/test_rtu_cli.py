"""`kilowatch agent read --rtu` as a process on a socat serial link to the simulator: values, raw
registers with every decoding, and one clear line with exit code 2 for a port that cannot be used."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial
from typer.testing import CliRunner

from agent.cli import app
from kilowatch.profiles import load_builtin
from sim.server import SimServer
from tests.agent_support import kilowatch
from tests.serial_link import SerialLink, serial_pair

SDM = load_builtin("eastron-sdm630")


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[tuple[SerialLink, SimServer]]:
    with serial_pair(tmp_path / "serial") as link:
        async with SimServer(profile=SDM, units=[1, 2], rtu=str(link.a), baud=19200) as sim:
            yield link, sim


async def test_read_values_over_rtu(line: tuple[SerialLink, SimServer]) -> None:
    link, sim = line
    code, out, err = await kilowatch(
        "agent", "read", "--rtu", str(link.b), "--baud", "19200", "--parity", "N",
        "--unit", "2", "--profile", "sdm630", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    values = json.loads(out)["values"]
    assert set(values) == {reg.quantity for reg in SDM.registers}
    assert values["energy_import_kwh"] == pytest.approx(sim.values(2)["energy_import_kwh"], rel=1e-3)


async def test_raw_registers_with_every_decoding(line: tuple[SerialLink, SimServer]) -> None:
    link, sim = line
    address = SDM.register("energy_import_kwh").address
    code, out, _ = await kilowatch(
        "agent",
        "raw",
        "--rtu",
        str(link.b),
        "--unit",
        "1",
        "--address",
        str(address),
        "--count",
        "2",
        "--json",
    )
    assert code == 0
    raw = json.loads(out)
    assert (raw["table"], raw["address"], raw["unit"], len(raw["words"])) == ("input", address, 1, 2)
    expected = sim.values(1)["energy_import_kwh"]
    assert SDM.register("energy_import_kwh").decode(raw["words"]) == pytest.approx(expected, rel=1e-3)
    code, out, _ = await kilowatch(
        "agent", "raw", "--rtu", str(link.b), "--unit", "1", "--address", str(address)
    )
    assert code == 0
    assert "every decoding" in out
    assert "float32" in out
    assert "CDAB" in out
    assert "int16" in out
    [row] = [line for line in out.splitlines() if "float32" in line and "ABCD" in line]
    assert float(row.split("│")[4]) == pytest.approx(expected, rel=1e-3)  # the row matching the display


async def test_the_old_read_raw_spelling_still_works(line: tuple[SerialLink, SimServer]) -> None:
    """README used to document `agent read --raw`: it runs `agent raw` and names it."""
    link, _ = line
    address = SDM.register("energy_import_kwh").address
    code, out, err = await kilowatch(
        "agent", "read", "--rtu", str(link.b), "--unit", "1", "--raw", str(address), "--json"
    )
    assert code == 0
    assert len(json.loads(out)["words"]) == 2
    assert "kilowatch agent raw --address" in err


async def test_a_busy_port_is_one_line_and_exit_2(line: tuple[SerialLink, SimServer]) -> None:
    link, _ = line
    with serial.Serial(str(link.b), exclusive=True):
        code, out, err = await kilowatch(
            "agent", "read", "--rtu", str(link.b), "--unit", "1", "--profile", "sdm630"
        )
    assert (code, out) == (2, "")
    assert err == f"bus '{link.b}' unavailable: {link.b}: the port is busy (another program has it open)\n"


async def test_settings_the_port_refuses_are_one_line_and_exit_2(line: tuple[SerialLink, SimServer]) -> None:
    link, _ = line  # a pseudo-terminal has no parity bit to set
    code, out, err = await kilowatch(
        "agent", "read", "--rtu", str(link.b), "--parity", "E", "--unit", "1", "--profile", "sdm630"
    )
    assert (code, out) == (2, "")
    assert err.startswith(
        f"bus '{link.b}' unavailable: {link.b} at 9600 8E1: the port refused the settings ("
    )
    assert err.count("\n") == 1


def test_a_missing_port_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(app, ["read", "--rtu", "/dev/ttyKW404", "--unit", "1", "--profile", "sdm630"])
    assert result.exit_code == 2
    assert result.output == "bus '/dev/ttyKW404' unavailable: /dev/ttyKW404: no such serial port\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--unit", "1", "--profile", "sdm630"],
        ["--tcp", "127.0.0.1:1502", "--rtu", "/dev/ttyUSB0", "--unit", "1", "--profile", "sdm630"],
        ["--tcp", "127.0.0.1:1502", "--baud", "9600", "--unit", "1", "--profile", "sdm630"],
        ["--rtu", "/dev/ttyUSB0", "--unit", "1"],
        ["--rtu", "/dev/ttyUSB0", "--parity", "X", "--unit", "1", "--profile", "sdm630"],
    ],
)
def test_conflicting_or_missing_options_exit_2(args: list[str]) -> None:
    assert CliRunner().invoke(app, ["read", *args]).exit_code == 2
