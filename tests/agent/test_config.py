"""agent.yaml validation: every error names the file, the line and the key; the sample config is valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import (
    BUILT_IN_TIMING,
    AgentConfig,
    ClockMode,
    ClockSettings,
    EffectiveTiming,
    Meter,
    MetricsSettings,
    MqttSettings,
    RtuBus,
    RtuOverTcpBus,
    SpoolSettings,
    TcpBus,
    Timing,
    effective_timing,
)
from agent.runner import link_of
from agent.transport import RtuOverTcpLink, SerialPortLink, TcpLink
from kilowatch import yamlconfig
from kilowatch.profiles import Connection, load_builtin
from tests.paths import REPO

EXAMPLE = REPO / "deploy" / "agent.example.yaml"

HEADER = """\
site: s1
gateway: g1
buses:
  - name: b1
    transport: tcp
    host: 127.0.0.1
    meters:
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(yamlconfig.ConfigError) as info:
        yamlconfig.load(AgentConfig, path)
    return info.value.problems


def test_the_sample_config_is_valid_and_shows_the_defaults() -> None:
    config = yamlconfig.load(AgentConfig, EXAMPLE)
    defaults = AgentConfig(site="s", gateway="g", buses=config.buses)
    assert config.model_dump() == defaults.model_dump() | {"site": config.site, "gateway": config.gateway}
    assert config.clock.mode is ClockMode.AUTO
    assert config.meter_ids == ["main-incomer", "floor-2-hvac", "pump-room", "chiller", "pv-inverter-meter"]
    assert [link_of(bus) for bus in config.buses] == [
        TcpLink("192.168.1.50", 502),
        SerialPortLink(device="/dev/ttyUSB0", baud=9600, parity="N", stopbits=1, bytesize=8),
        RtuOverTcpLink("192.168.1.60", 4001),
    ]


MODELS = (
    AgentConfig,
    MqttSettings,
    ClockSettings,
    SpoolSettings,
    MetricsSettings,
    TcpBus,
    RtuBus,
    RtuOverTcpBus,
    Meter,
    Timing,
)
FIELDS = {name for model in MODELS for name in model.model_fields}


def test_every_key_of_the_sample_config_appears_in_it() -> None:
    text = EXAMPLE.read_text()
    for name in FIELDS:
        assert f"{name}:" in text, f"{name} is missing from {EXAMPLE.name}"


def test_unit_out_of_range_names_line_and_key(tmp_path: Path) -> None:
    text = HEADER + (
        "      - {id: m1, profile: sdm630, unit: 1}\n"
        "      - {id: m2, profile: sdm630, unit: 2}\n"
        "      - id: m3\n"
        "        profile: sdm630\n"
        "        unit: 300\n"
    )
    assert problems(tmp_path, text) == [
        "agent.yaml:12 buses[0].meters[2].unit: 300: Input should be less than or equal to 247"
    ]


def test_duplicate_meter_id_across_buses_points_at_the_second(tmp_path: Path) -> None:
    text = HEADER + (
        "      - {id: m1, profile: sdm630, unit: 1}\n"
        "  - name: b2\n"
        "    transport: tcp\n"
        "    host: 127.0.0.2\n"
        "    meters:\n"
        "      - {id: m2, profile: sdm630, unit: 1}\n"
        "      - id: m1\n"
        "        profile: sdm630\n"
        "        unit: 2\n"
    )
    assert problems(tmp_path, text) == [
        "agent.yaml:14 buses[1].meters[1].id: 'm1': already used by buses[0].meters[0]"
    ]


def test_duplicate_unit_on_one_bus_points_at_the_second(tmp_path: Path) -> None:
    text = HEADER + "      - {id: m1, profile: sdm630, unit: 7}\n      - {id: m2, profile: sdm630, unit: 7}\n"
    assert problems(tmp_path, text) == ["agent.yaml:9 buses[0].meters[1].unit: 7: already used by meters[0]"]


def test_duplicate_bus_name(tmp_path: Path) -> None:
    text = HEADER + (
        "      - {id: m1, profile: sdm630, unit: 1}\n"
        "  - name: b1\n"
        "    transport: tcp\n"
        "    host: 127.0.0.2\n"
        "    meters: [{id: m2, profile: sdm630, unit: 1}]\n"
    )
    assert problems(tmp_path, text) == ["agent.yaml:9 buses[1].name: 'b1': already used by buses[0]"]


def test_unknown_profile_lists_the_shipped_ones(tmp_path: Path) -> None:
    text = HEADER + "      - id: m1\n        profile: sdm999\n        unit: 1\n"
    [problem] = problems(tmp_path, text)
    assert problem.startswith("agent.yaml:9 buses[0].meters[0].profile: 'sdm999': no device profile 'sdm999'")
    assert "shipped profiles: " in problem
    assert "eastron-sdm630" in problem


def test_missing_and_unknown_keys(tmp_path: Path) -> None:
    text = "site: s1\nbuses:\n  - name: b1\n    transport: tcp\n    hots: x\n    meters:\n"
    text += "      - {id: m1, unit: 1}\n"
    assert sorted(problems(tmp_path, text)) == [
        "agent.yaml:1 gateway: field required",
        "agent.yaml:3 buses[0].host: field required",
        "agent.yaml:5 buses[0].hots: extra inputs are not permitted",
        "agent.yaml:7 buses[0].meters[0].profile: field required",
    ]


def test_unknown_transport_and_bad_ids(tmp_path: Path) -> None:
    text = (
        "site: Site One\ngateway: g1\nbuses:\n  - name: b1\n    transport: modbus\n    host: x\n"
        "    meters: [{id: m1, profile: sdm630, unit: 1}]\n"
    )
    found = problems(tmp_path, text)
    assert found[0].startswith("agent.yaml:1 site: 'Site One': String should match pattern")
    assert found[1].startswith(
        "agent.yaml:4 buses[0]: Input tag 'modbus' found using 'transport' does not match"
    )


def test_reconnect_bounds_in_order(tmp_path: Path) -> None:
    text = (
        "mqtt:\n  reconnect_min_s: 5\n  reconnect_max_s: 2\n"
        + HEADER
        + "      - {id: m1, profile: sdm630, unit: 1}\n"
    )
    assert problems(tmp_path, text) == [
        "agent.yaml:3 mqtt.reconnect_max_s: 2: must not be less than reconnect_min_s"
    ]


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    text = HEADER + "      - {id: m1, profile: sdm630, unit: 1\n"
    [problem] = problems(tmp_path, text)
    assert problem.startswith("agent.yaml:9: not valid YAML:")


def test_password_is_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "mqtt: {username: u, password: hunter2}\n" + HEADER + "      - {id: m1, profile: sdm630, unit: 1}\n"
    )
    config = yamlconfig.load(AgentConfig, path)
    assert "hunter2" not in repr(config)
    assert "hunter2" not in config.model_dump_json()
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "hunter2"


@pytest.mark.parametrize(
    "command", [["app", "agent", "run"], ["agent"]], ids=["kilowatch agent run", "agent"]
)
def test_agent_run_exits_2_with_the_problem(tmp_path: Path, command: list[str]) -> None:
    """`kilowatch agent run` execs `python -m agent`: both report a bad file the same way."""
    path = tmp_path / "agent.yaml"
    path.write_text(HEADER + "      - {id: m1, profile: sdm630, unit: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", *command, "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}: invalid configuration\n")
    assert (
        "agent.yaml:8 buses[0].meters[0].unit: 0: Input should be greater than or equal to 1" in result.stderr
    )


RTU = """\
site: s1
gateway: g1
buses:
  - name: line-1
    transport: rtu
    port: /dev/ttyUSB0
    meters:
"""


def test_a_serial_bus_error_is_located_despite_the_union_tag(tmp_path: Path) -> None:
    text = (
        RTU
        + "      - {id: m1, profile: sdm630, unit: 1}\n      - id: m2\n        profile: sdm630\n        unit: 0\n"
    )
    assert problems(tmp_path, text) == [
        "agent.yaml:11 buses[0].meters[1].unit: 0: Input should be greater than or equal to 1"
    ]
    assert problems(
        tmp_path, RTU.replace("    port: /dev/ttyUSB0\n", "") + "      - {id: m1, profile: sdm630, unit: 1}\n"
    ) == ["agent.yaml:4 buses[0].port: field required"]
    assert problems(
        tmp_path,
        RTU.replace("    meters:", "    parity: X\n    meters:")
        + "      - {id: m1, profile: sdm630, unit: 1}\n",
    )[0].startswith("agent.yaml:7 buses[0].parity: 'X': Input should be 'N', 'E' or 'O'")


def test_serial_line_config_over_profile_over_built_in(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        RTU.replace("meters:", "baud: 19200\n    parity: E\n    meters:")
        + "      - {id: m1, profile: sdm630, unit: 1}\n"
    )
    bus = yamlconfig.load(AgentConfig, path).buses[0]
    assert isinstance(bus, RtuBus)
    assert str(bus.line) == "19200 8E1"  # baud and parity from the bus, the rest from the profile
    over_tcp = RtuOverTcpBus(name="c", transport="rtu-over-tcp", host="h", port=4001, meters=bus.meters)
    assert str(over_tcp.line) == "9600 8N1"


def test_meters_whose_profiles_disagree_on_the_line_need_it_on_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.config

    fast = load_builtin("sdm630").model_copy(update={"connection": Connection(baud=19200)})
    monkeypatch.setattr(
        agent.config, "load_builtin", lambda name: fast if name == "fast" else load_builtin(name)
    )
    meters = "      - {id: m1, profile: sdm630, unit: 1}\n      - {id: m2, profile: fast, unit: 2}\n"
    assert problems(tmp_path, RTU + meters) == [
        "agent.yaml:9 buses[0].meters[1].profile: 'fast': its profile's baud 19200 differs from meters[0]'s "
        "9600; set baud on the bus"
    ]
    path = tmp_path / "ok.yaml"
    path.write_text(RTU.replace("meters:", "baud: 19200\n    meters:") + meters)
    bus = yamlconfig.load(AgentConfig, path).buses[0]
    assert isinstance(bus, RtuBus)
    assert str(bus.line) == "19200 8N1"


def test_timing_inherits_key_by_key_and_zero_is_not_inherit() -> None:
    profile = load_builtin("sdm630")
    assert effective_timing(Timing(), Timing(), profile) == BUILT_IN_TIMING
    bus = Timing(timeout_s=0.5, retries=3, pause_between_requests_s=0.02)
    meter = Timing(retries=0, pause_between_requests_s=0)
    assert effective_timing(meter, bus, profile) == EffectiveTiming(
        timeout_s=0.5, retries=0, pause_after_connect_s=0.0, pause_between_requests_s=0.0
    )
    slow = profile.model_copy(update={"connection": profile.connection.model_copy(update={"timeout_s": 3.0})})
    assert effective_timing(Timing(), Timing(retries=2), slow).timeout_s == 3.0
    assert effective_timing(Timing(), bus, slow) == EffectiveTiming(
        timeout_s=0.5, retries=3, pause_after_connect_s=0.0, pause_between_requests_s=0.02
    )


def test_a_bus_timeout_s_from_older_configs_still_works(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        HEADER.replace("meters:", "timeout_s: 2.5\n    meters:")
        + "      - {id: m1, profile: sdm630, unit: 1}\n"
    )
    bus = yamlconfig.load(AgentConfig, path).buses[0]
    assert bus.timing == Timing(timeout_s=2.5)
    assert bus.timing_of(bus.meters[0]).timeout_s == 2.5


def test_a_quantity_selection_names_quantities_of_the_profile_and_shrinks_it() -> None:
    from pydantic import ValidationError

    from agent.config import AgentConfig

    def config(bus_quantities: list[str] | None, meter_quantities: list[str] | None) -> AgentConfig:
        meter: dict[str, object] = {"id": "m1", "profile": "sdm630", "unit": 1}
        if meter_quantities is not None:
            meter["quantities"] = meter_quantities
        bus: dict[str, object] = {"name": "b", "transport": "tcp", "host": "h", "meters": [meter]}
        if bus_quantities is not None:
            bus["quantities"] = bus_quantities
        return AgentConfig.model_validate({"site": "s", "gateway": "g", "buses": [bus]})

    bus = config(["voltage_l1_v", "energy_import_kwh"], None).buses[0]
    assert [r.quantity for r in bus.profile_of(bus.meters[0]).registers] == [
        "voltage_l1_v",
        "energy_import_kwh",
    ]
    bus = config(["voltage_l1_v"], ["frequency_hz"]).buses[0]  # the meter's list replaces the bus's
    assert [r.quantity for r in bus.profile_of(bus.meters[0]).registers] == ["frequency_hz"]
    assert bus.profile_of(bus.meters[0]).id == "eastron-sdm630"
    full = config(None, None).buses[0]
    assert full.profile_of(full.meters[0]) == load_builtin("sdm630")
    with pytest.raises(ValidationError) as info:
        config(None, ["voltage_l1_v", "gas_m3"])
    [error] = info.value.errors()
    assert error["loc"] == ("buses", 0, "tcp", "meters", 0, "quantities", 1)
    assert "gas_m3 is not a quantity of profile sdm630" in error["msg"]
