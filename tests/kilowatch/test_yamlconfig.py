"""YAML loading names file, line and key for every kind of problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kilowatch.yamlconfig import MAX_BYTES, ConfigError, load


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    unit: int = Field(ge=1, le=247)


class Bus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    meters: list[Meter]


class Conf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str
    buses: list[Bus]
    password: int | None = None
    url: str = Field("http://localhost", pattern="^https://")


GOOD = """site: s1
buses:
  - name: b0
    meters:
      - {id: a, unit: 1}
      - id: b
        unit: 2
      - id: c
        unit: 300
"""


def _load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(Conf, path)
    return info.value.problems


def test_out_of_range_value_points_at_its_line(tmp_path: Path) -> None:
    assert _load(tmp_path, GOOD) == [
        "agent.yaml:9 buses[0].meters[2].unit: 300: Input should be less than or equal to 247"
    ]


def test_missing_and_unknown_keys(tmp_path: Path) -> None:
    problems = _load(tmp_path, GOOD.replace("site: s1", "sight: s1").replace("unit: 300", "unit: 3"))
    assert "agent.yaml:1 sight: extra inputs are not permitted" in problems
    assert "agent.yaml:1 site: field required" in problems


def test_broken_yaml_empty_and_missing_files(tmp_path: Path) -> None:
    assert _load(tmp_path, "site: [unclosed\n")[0].startswith("agent.yaml:2: not valid YAML")
    assert _load(tmp_path, "") == ["agent.yaml: the file is empty"]
    with pytest.raises(ConfigError, match="cannot read"):
        load(Conf, tmp_path / "absent.yaml")


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD.replace("unit: 300", "unit: 3"))
    assert [m.unit for m in load(Conf, path).buses[0].meters] == [1, 2, 3]


def test_secrets_are_never_quoted(tmp_path: Path) -> None:
    text = GOOD.replace("unit: 300", "unit: 3") + "password: hunter2\nurl: http://bob:hunter2@tsdb:8086\n"
    problems = _load(tmp_path, text)
    assert problems == [
        "agent.yaml:10 password: (value hidden): Input should be a valid integer, unable to parse string as an integer",
        "agent.yaml:11 url: 'http://***@tsdb:8086': String should match pattern '^https://'",
    ]
    assert not any("hunter2" in p for p in problems)


class Serial(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["serial"]
    meters: list[Meter]


class Network(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["network"]
    host: str


class Tagged(BaseModel):
    model_config = ConfigDict(extra="forbid")
    buses: list[Annotated[Serial | Network, Field(discriminator="kind")]]


def test_a_tagged_union_member_is_located_without_its_tag(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "buses:\n  - kind: network\n    host: h\n  - kind: serial\n    meters:\n"
        "      - {id: a, unit: 1}\n      - id: b\n        unit: 0\n  - kind: network\n    hots: h\n"
    )
    with pytest.raises(ConfigError) as info:
        load(Tagged, path)
    assert info.value.problems == [
        "agent.yaml:8 buses[1].meters[1].unit: 0: Input should be greater than or equal to 1",
        "agent.yaml:9 buses[2].host: field required",
        "agent.yaml:10 buses[2].hots: extra inputs are not permitted",
    ]


def test_a_binary_or_non_utf8_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"site: s1\nbuses: []\n# caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError) as info:
        load(Conf, path)
    assert info.value.problems == ["agent.yaml:3: not UTF-8 text (byte 0xe9): binary or another encoding"]
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=r"^agent\.yaml:2: not UTF-8 text \(byte 0x80\)"):
        load(Conf, path)
    path.write_bytes(b"site: s1\x00\x01\n")  # valid UTF-8, but control characters: not YAML
    with pytest.raises(ConfigError, match=r"^agent\.yaml:1: not valid YAML: character #x0000 is not allowed"):
        load(Conf, path)


def test_the_cli_exits_2_naming_a_binary_config(tmp_path: Path) -> None:
    """It ended in a traceback with exit 1 (issue 16, finding 9)."""
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    done = subprocess.run(
        [sys.executable, "-m", "app", "agent", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "agent.yaml:2: not UTF-8 text (byte 0x80)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    text = GOOD.replace("unit: 300", "unit: 3") + "site: s2\n"
    assert _load(tmp_path, text) == ["agent.yaml:10 duplicate key 'site': already given at line 1"]
    nested = (
        "site: s1\nbuses:\n  - name: b0\n    meters: []\n    name: b1\n  - {name: b2, meters: [], name: b3}\n"
    )
    assert _load(tmp_path, nested) == [
        "agent.yaml:5 duplicate key 'name': already given at line 3",
        "agent.yaml:6 duplicate key 'name': already given at line 6",
    ]
    # YAML merge keys are not duplicates: `<<` may appear more than once.
    merged = "base: &b {unit: 1}\nother: &o {id: x}\nsite: s1\nbuses:\n  - name: b0\n    meters:\n      - <<: *b\n        <<: *o\n"
    path = tmp_path / "merged.yaml"
    path.write_text(merged)
    with pytest.raises(ConfigError) as info:
        load(Conf, path)
    assert not any("duplicate" in p for p in info.value.problems)  # only base/other are unknown keys


def test_a_file_over_the_size_limit_is_refused_without_parsing_it(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD.replace("unit: 300", "unit: 3") + "#" * MAX_BYTES)
    with pytest.raises(ConfigError) as info:
        load(Conf, path)
    assert info.value.problems == [f"agent.yaml: larger than {MAX_BYTES} bytes: not a config file"]


def test_a_file_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    assert _load(tmp_path, "site: " + "[" * 20_000 + "]" * 20_000 + "\n") == [
        "agent.yaml: nested too deeply to be a config file"
    ]
