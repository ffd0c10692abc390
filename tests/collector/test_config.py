"""collector.yaml: defaults, errors that name file, line and key, and the example file kept in step."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from collector.cli import app
from collector.config import CollectorConfig
from kilowatch import yamlconfig
from tests.paths import REPO

EXAMPLE = REPO / "deploy" / "collector.example.yaml"


def load_text(tmp_path: Path, text: str) -> CollectorConfig:
    path = tmp_path / "collector.yaml"
    path.write_text(text)
    return yamlconfig.load(CollectorConfig, path)


def test_the_example_loads_and_equals_the_defaults() -> None:
    assert yamlconfig.load(CollectorConfig, EXAMPLE) == CollectorConfig()


def test_a_tsdb_section_with_a_token(tmp_path: Path) -> None:
    config = load_text(tmp_path, "tsdb:\n  url: http://influx:8086\n  token: s3cret\n")
    assert config.tsdb is not None
    assert config.tsdb.token is not None
    assert config.tsdb.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in config.model_dump_json()


def test_a_postgresql_ledger_is_named_without_its_password(tmp_path: Path) -> None:
    config = load_text(tmp_path, "ledger:\n  url: postgresql://kw:s3cret@db:5432/kilowatch\n")
    assert str(config.ledger.location) == "postgresql://kw@db:5432/kilowatch"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in repr(config.ledger.location)


def test_a_replicas_share_group_is_a_secret(tmp_path: Path) -> None:
    group = "3f9c2a7d51e04b8c9a6d0e2f4b7c1a58"
    config = load_text(tmp_path, f"mqtt:\n  share_group: {group}\nledger:\n  url: postgresql://u@db/x\n")
    assert config.mqtt.share_group is not None
    assert config.mqtt.share_group.get_secret_value() == group
    assert group not in repr(config)
    assert group not in config.model_dump_json()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "mqtt:\n  host: broker\n  prot: 1884\n",
            "collector.yaml:3 mqtt.prot: extra inputs are not permitted",
        ),
        (
            "api:\n  port: 70000\n",
            "collector.yaml:2 api.port: 70000: Input should be less than or equal to 65535",
        ),
        (
            "mqtt:\n  password: hunter2\n",
            "collector.yaml:2 mqtt.password: (value hidden): password is set but username is not",
        ),
        ("tsdb:\n  token: t\n", "collector.yaml:1 tsdb.url: field required"),
        (
            "tsdb:\n  url: influx:8086\n",
            "collector.yaml:2 tsdb.url: 'influx:8086': String should match pattern",
        ),
        (
            "tsdb:\n  url: http://u:pw@influx\n",
            "collector.yaml:2 tsdb.url: 'http://***@influx': Value error, the URL must not carry credential",
        ),
        ("mqtt:\n  topic_root: kilowatch/#\n", "collector.yaml:2 mqtt.topic_root: 'kilowatch/#'"),
        (
            "ledger:\n  url: mysql://u:hunter2@db/x\n",
            "collector.yaml:2 ledger.url: 'mysql://***@db/x': Value error, must be a postgresql:// URL",
        ),
        (
            "mqtt:\n  share_group: hunter2hunter2\nledger:\n  url: postgresql://u@db/x\n",
            "collector.yaml:2 mqtt.share_group: (value hidden): Value error, must be a secret of 16 to 64 letters",
        ),
        (
            "ledger:\n  path: k.db\n  url: postgresql://u:hunter2@db/x\n",
            "collector.yaml:1 ledger: Value error, give either path (a SQLite file) or url (a PostgreSQL database)",
        ),
    ],
)
def test_errors_name_the_line_and_the_key(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(yamlconfig.ConfigError) as caught:
        load_text(tmp_path, text)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert "hunter2" not in str(caught.value)


def test_the_cli_exits_2_with_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("ledger:\n  path: x.db\n  size: 3\n")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "collector.yaml:3 ledger.size: extra inputs are not permitted" in result.output


def test_a_flat_alert_tariff_is_refused_with_where_prices_live_now(tmp_path: Path) -> None:
    """Prices have one source, the sites file: the old flat rate is an error, not silently ignored."""
    with pytest.raises(yamlconfig.ConfigError) as caught:
        load_text(tmp_path, "ledger:\n  path: x.db\nalerts:\n  tariff_vnd_per_kwh: 2000\n")
    [problem] = caught.value.problems
    assert problem.startswith("collector.yaml:3 alerts: Value error, tariff_vnd_per_kwh is no longer read"), (
        problem
    )
    assert "sites.<site>.tariff" in problem
    assert "detection.sites" in problem
