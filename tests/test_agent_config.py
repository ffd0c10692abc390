"""agent.yaml validation: every error names the file, the line and the key; the sample config is valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.config import AgentConfig, ClockMode, ClockSettings, Meter, MqttSettings, TcpBus
from kilowatch import yamlconfig

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "agent.example.yaml"

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
    assert config.meter_ids == ["main-incomer", "floor-2-hvac"]


MODELS = (AgentConfig, MqttSettings, ClockSettings, TcpBus, Meter)
FIELDS = {name for model in MODELS for name in model.model_fields}


def test_every_key_of_the_sample_config_appears_in_it() -> None:
    text = EXAMPLE.read_text()
    for name in FIELDS:
        assert f"{name}:" in text, f"{name} is missing from {EXAMPLE.name}"


def test_the_defaults_the_sample_config_shows_are_the_real_ones(tmp_path: Path) -> None:
    """Uncommenting every `# key: value` line must change nothing."""
    commented = re.compile(r"^(\s*)# (\w+): (.*)$")
    lines = []
    uncommented = 0
    for line in EXAMPLE.read_text().splitlines():
        match = commented.match(line)
        if match and match[2] in FIELDS:
            line = f"{match[1]}{match[2]}: {match[3]}"
            uncommented += 1
        lines.append(line)
    assert uncommented == 14
    explicit = tmp_path / "agent.yaml"
    explicit.write_text("\n".join(lines))
    assert yamlconfig.load(AgentConfig, explicit) == yamlconfig.load(AgentConfig, EXAMPLE)


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
        "site: Site One\ngateway: g1\nbuses:\n  - name: b1\n    transport: rtu\n    host: x\n"
        "    meters: [{id: m1, profile: sdm630, unit: 1}]\n"
    )
    found = problems(tmp_path, text)
    assert found[0].startswith("agent.yaml:1 site: 'Site One': String should match pattern")
    assert found[1] == "agent.yaml:5 buses[0].transport: 'rtu': Input should be 'tcp'"


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


def test_agent_run_exits_2_with_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(HEADER + "      - {id: m1, profile: sdm630, unit: 0}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert (
        "agent.yaml:8 buses[0].meters[0].unit: 0: Input should be greater than or equal to 1" in result.output
    )
