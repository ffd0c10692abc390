"""YAML loading names file, line and key for every kind of problem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kilowatch.yamlconfig import ConfigError, load


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
