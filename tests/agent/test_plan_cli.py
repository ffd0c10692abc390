"""`kilowatch agent plan` and `agent check`: the plan and bus time per cycle, from config files alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import app
from kilowatch import profiles
from kilowatch.profiles import load_builtin

SDM = load_builtin("eastron-sdm630")
SDM_FIRST = ["voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a", "current_l3_a"]
runner = CliRunner()


def write_config(tmp_path: Path, buses: list[dict[str, Any]], poll_interval_s: float = 10) -> Path:
    path = tmp_path / "agent.yaml"
    config = {"site": "s1", "gateway": "g1", "poll_interval_s": poll_interval_s, "buses": buses}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def meters(bus: str, n: int) -> list[dict[str, Any]]:
    return [{"id": f"{bus}-m{unit}", "profile": "sdm630", "unit": unit} for unit in range(1, n + 1)]


def tcp_bus(n: int = 2) -> dict[str, Any]:
    return {"name": "panel", "transport": "tcp", "host": "192.0.2.1", "meters": meters("panel", n)}


def rtu_bus(n: int = 2, **line: Any) -> dict[str, Any]:
    return {"name": "line1", "transport": "rtu", "port": "/dev/ttyUSB0", **line, "meters": meters("line1", n)}


def plan_json(config: Path, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["plan", "--config", str(config), "--json", *args])
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_json_shape_for_a_tcp_bus(tmp_path: Path) -> None:
    out = plan_json(write_config(tmp_path, [tcp_bus()]))
    assert out["turnaround_s"] == 0.010
    [bus] = out["buses"]
    assert list(bus) == ["name", "transport", "meters", "time_s", "poll_interval_s", "share"]
    assert (bus["name"], bus["transport"], bus["poll_interval_s"]) == ("panel", "tcp", 10)
    first = bus["meters"][0]
    assert list(first) == ["id", "unit", "profile", "line", "baud_source", "pause_s", "requests", "time_s"]
    assert (first["id"], first["unit"], first["profile"]) == ("panel-m1", 1, "eastron-sdm630")
    # Modbus TCP: no serial line is modelled (a meter with Ethernet, or a gateway's unseen line).
    assert (first["line"], first["baud_source"]) == ("Modbus TCP", "none")
    request = first["requests"][0]
    assert list(request) == [
        "function", "start", "count", "quantities", "request_bytes", "response_bytes", "time_s"
    ]  # fmt: skip
    assert (request["function"], request["start"], request["count"]) == (4, "0x0000", 36)
    assert request["quantities"][:6] == SDM_FIRST
    assert len(request["quantities"]) == 18
    assert (request["request_bytes"], request["response_bytes"]) == (12, 81)  # Modbus TCP framing
    assert [r["start"] for r in first["requests"]] == [
        "0x0000", "0x0034", "0x0038", "0x003C", "0x0046", "0x00C8", "0x00E0"
    ]  # fmt: skip
    assert (request["time_s"], first["time_s"], bus["time_s"], bus["share"]) == (None, None, None, None)


def test_an_rtu_over_tcp_converter_without_a_baud_assumes_the_profiles(tmp_path: Path) -> None:
    bus = {
        "name": "conv",
        "transport": "rtu-over-tcp",
        "host": "192.0.2.1",
        "port": 4001,
        "meters": meters("conv", 1),
    }
    meter = plan_json(write_config(tmp_path, [bus]))["buses"][0]["meters"][0]
    assert (meter["line"], meter["baud_source"]) == ("9600 8N1", "assumed")
    request = meter["requests"][0]
    # 8 + 77 RTU bytes + 7 silence characters = 92 characters x 10 bits / 9600 + 10 ms turnaround.
    assert request["time_s"] == pytest.approx(92 / 960 + 0.010)


def test_a_quantity_selection_shrinks_the_plan(tmp_path: Path) -> None:
    """The site needs 11 quantities: fewer registers and requests, for the whole bus or one meter."""
    core = [
        "voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a", "current_l3_a",
        "active_power_w", "power_factor", "frequency_hz", "energy_import_kwh", "energy_export_kwh",
    ]  # fmt: skip
    full = plan_json(write_config(tmp_path, [rtu_bus(1)]))["buses"][0]
    selected = plan_json(write_config(tmp_path, [rtu_bus(1, quantities=core)]))["buses"][0]
    one = rtu_bus(2, quantities=core)
    one["meters"][1]["quantities"] = ["energy_import_kwh"]
    mixed = plan_json(write_config(tmp_path, [one]))["buses"][0]["meters"]
    for bus in (full, selected):
        assert sum(len(r["quantities"]) for r in bus["meters"][0]["requests"]) == len(
            {q for r in bus["meters"][0]["requests"] for q in r["quantities"]}
        )
    requests = [len(b["meters"][0]["requests"]) for b in (full, selected)]
    registers = [sum(r["count"] for r in b["meters"][0]["requests"]) for b in (full, selected)]
    assert requests[1] < requests[0]
    assert registers[1] < registers[0]
    assert selected["time_s"] < full["time_s"]
    assert sorted(q for r in selected["meters"][0]["requests"] for q in r["quantities"]) == sorted(core)
    assert [q for r in mixed[1]["requests"] for q in r["quantities"]] == ["energy_import_kwh"]


def test_an_rtu_bus_uses_its_own_line_settings(tmp_path: Path) -> None:
    out = plan_json(write_config(tmp_path, [rtu_bus(baud=19200, parity="E")]), "--turnaround-ms", "0")
    meter = out["buses"][0]["meters"][0]
    assert (meter["line"], meter["baud_source"]) == ("19200 8E1", "bus")
    request = meter["requests"][1]  # 0x0034, 2 registers
    assert (request["request_bytes"], request["response_bytes"]) == (8, 9)
    # 17 bytes + 7 silence characters = 24 characters x 11 bits at 19200 baud, no turnaround.
    assert request["time_s"] == pytest.approx(24 * 11 / 19200)


def test_an_rtu_bus_without_a_baud_runs_at_the_profile_default(tmp_path: Path) -> None:
    meter = plan_json(write_config(tmp_path, [rtu_bus()]))["buses"][0]["meters"][0]
    assert (meter["line"], meter["baud_source"]) == ("9600 8N1", "profile")


def test_pauses_between_requests_count_as_bus_time(tmp_path: Path) -> None:
    plain = plan_json(write_config(tmp_path, [rtu_bus(1)]))["buses"][0]["meters"][0]
    paused_bus = rtu_bus(1, timing={"pause_between_requests_s": 0.05})
    paused = plan_json(write_config(tmp_path, [paused_bus]))["buses"][0]["meters"][0]
    assert paused["pause_s"] == 0.05
    assert len(paused["requests"]) <= len(plain["requests"])
    assert paused["time_s"] > plain["time_s"]


def test_text_output_names_requests_and_totals(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--config", str(write_config(tmp_path, [tcp_bus()]))])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "bus panel (tcp)" in lines
    assert any(line.split()[:3] == ["FC04", "0x0000", "x36"] and "voltage_l1_v" in line for line in lines)
    assert "no line-time estimate" in result.stdout
    assert "  bus total 14 requests per cycle; no line-time estimate on Modbus TCP" in result.stdout
    result = runner.invoke(app, ["plan", "--config", str(write_config(tmp_path, [rtu_bus()]))])
    assert any(
        line.strip().startswith("bus total") and "of the 10 s poll interval" in line
        for line in result.stdout.splitlines()
    )


def test_plan_warns_when_a_cycle_exceeds_the_poll_interval(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--config", str(write_config(tmp_path, [rtu_bus(4)], 1))])
    assert result.exit_code == 0
    assert "warning: bus line1" in result.stderr
    assert "longer than the 1 s poll interval" in result.stderr


def test_check_passes_a_good_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "--config", str(write_config(tmp_path, [tcp_bus(), rtu_bus()]))])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok ")
    assert "2 bus(es), 4 meter(s), 1 profile(s), 28 requests per cycle; busiest bus line1" in result.stdout


def test_check_fails_a_bus_that_cannot_keep_its_poll_interval(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "--config", str(write_config(tmp_path, [rtu_bus(4)], 1))])
    assert result.exit_code == 2
    assert "bus line1: one poll cycle takes an estimated 1.38 s" in result.stderr


def test_check_only_warns_when_the_line_speed_is_a_guess(tmp_path: Path) -> None:
    bus = {
        "name": "conv",
        "transport": "rtu-over-tcp",
        "host": "192.0.2.1",
        "port": 4001,
        "meters": meters("conv", 4),
    }
    result = runner.invoke(app, ["check", "--config", str(write_config(tmp_path, [bus], 1))])
    assert result.exit_code == 0, result.output
    assert "warning: bus conv" in result.stderr
    assert "(assumed baud)" in result.stderr


def test_a_modbus_tcp_bus_is_not_judged_by_a_serial_model(tmp_path: Path) -> None:
    """32 meters on Modbus TCP at 1 s: the serial model said 1104 % where the real cycle took 0.3 s."""
    result = runner.invoke(app, ["check", "--config", str(write_config(tmp_path, [tcp_bus(32)], 1))])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "no line-time estimate (Modbus TCP)" in result.stdout


def test_check_reports_failing_test_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = (profiles.builtin_dir() / "eastron-sdm630.yaml").read_text()
    broken = tmp_path / "profiles"
    broken.mkdir()
    (broken / "eastron-sdm630.yaml").write_text(shipped.replace("voltage_l1_v: 230.0", "voltage_l1_v: 231.0"))
    monkeypatch.setattr(profiles, "builtin_dir", lambda: broken)
    result = runner.invoke(app, ["check", "--config", str(write_config(tmp_path, [tcp_bus()]))])
    assert result.exit_code == 2
    assert "eastron-sdm630: test_vectors[0] voltage_l1_v: expected 231.0, got 230.0" in result.stderr


def test_check_as_a_process_names_the_bad_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, [tcp_bus()])
    config.write_text(config.read_text().replace("unit: 2", "unit: 300"))
    result = subprocess.run(
        [sys.executable, "-m", "app", "agent", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "agent.yaml:" in result.stderr
    assert "meters[1].unit" in result.stderr
    assert result.stdout == ""
