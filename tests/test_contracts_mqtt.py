"""The MQTT contract: topics, models, and the published JSON Schema agree with each other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from kilowatch.mqtt_contract import (
    MESSAGES,
    Channel,
    ReadingsBatch,
    parse_topic,
    subscription,
    topic,
)
from kilowatch.profiles_cli import schema_documents
from kilowatch.quantities import QUANTITIES

DOCS = Path(__file__).resolve().parent.parent / "docs"
REQUIRED_NAMES = [
    "voltage_l1_v",
    "voltage_l2_v",
    "voltage_l3_v",
    "voltage_l1_l2_v",
    "voltage_l2_l3_v",
    "voltage_l3_l1_v",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
    "active_power_w",
    "active_power_l1_w",
    "active_power_l2_w",
    "active_power_l3_w",
    "reactive_power_var",
    "apparent_power_va",
    "power_factor",
    "frequency_hz",
    "energy_import_kwh",
    "energy_export_kwh",
    "reactive_energy_import_kvarh",
    "reactive_energy_export_kvarh",
]


def batch(**overrides: Any) -> dict[str, Any]:
    reading = {
        "meter": "main",
        "profile": "eastron-sdm630",
        "ts": 1_795_000_000_000,
        "values": {"active_power_w": 1234.5, "energy_import_kwh": 100.25},
        "quality": "good",
        "clock": "synced",
        "mono_ms": 86_400_123,
    }
    reading.update(overrides.pop("reading", {}))
    doc = {
        "schema_version": 1,
        "site": "office-1",
        "gateway": "gw-1",
        "seq": 7,
        "spool_id": "0f3a9c1e5b7d2a64",
        "sent_at": 1_795_000_000_100,
        "boot_id": "6c0e3f52-8d1b-4c3a-9f0e-2b7d5a1c4e98",
        "readings": [reading],
    }
    doc.update(overrides)
    return doc


def published_schema(stem: str) -> dict[str, Any]:
    return dict(json.loads((DOCS / "mqtt" / f"{stem}.schema.json").read_text()))


def test_vocabulary_has_the_required_names() -> None:
    assert set(REQUIRED_NAMES) <= set(QUANTITIES)
    for name, q in QUANTITIES.items():
        assert name.endswith(("_v", "_a", "_w", "_var", "_va", "_hz", "_kwh", "_kvarh")) or name.startswith(
            "power_factor"
        ), f"{name} does not end with its unit"
        assert q.unit


def test_published_schemas_are_up_to_date() -> None:
    for name, schema in schema_documents().items():
        assert json.loads((DOCS / name).read_text()) == schema, (
            f"docs/{name} is stale: run `kilowatch schemas`"
        )
    assert set(MESSAGES) == {p.name.removesuffix(".schema.json") for p in (DOCS / "mqtt").glob("*.json")}


def test_a_valid_batch_passes_both_the_model_and_the_published_schema() -> None:
    doc = batch()
    jsonschema.validate(doc, published_schema("readings-batch"))
    parsed = ReadingsBatch.model_validate(doc)
    assert json.loads(parsed.model_dump_json()) == {
        **doc,
        "readings": [{**doc["readings"][0], "value_quality": {}}],
    }


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (batch(reading={"values": {"watts": 1.0}}), "watts"),
        (batch(schema_version=2), "schema_version"),
        (batch(site="Office/1"), "site"),
        (batch(seq=-1), "seq"),
        (batch(readings=[]), "readings"),
        (batch(reading={"quality": "bad"}), "quality"),
        (batch(reading={"clock": "sometimes"}), "clock"),
        (batch(extra_field=1), "extra_field"),
        (batch(reading={"ts": "yesterday"}), "ts"),
    ],
)
def test_invalid_batches_fail_the_model_and_the_published_schema(doc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ReadingsBatch.model_validate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, published_schema("readings-batch"))


def test_model_only_rules() -> None:
    """Rules JSON Schema cannot express: finite numbers and a consistent quality flag."""
    with pytest.raises(ValidationError, match="finite"):
        ReadingsBatch.model_validate(batch(reading={"values": {"active_power_w": float("inf")}}))
    with pytest.raises(ValidationError, match="good"):
        ReadingsBatch.model_validate(batch(reading={"value_quality": {"active_power_w": "error"}}))


def test_topics_round_trip() -> None:
    name = topic("office-1", "gw-1", Channel.READINGS)
    assert name == "kilowatch/v1/office-1/gw-1/readings"
    assert parse_topic(name) == ("office-1", "gw-1", Channel.READINGS)
    assert subscription(Channel.STATUS) == "kilowatch/v1/+/+/status"
    for bad in (
        "other/v1/a/b/readings",
        "kilowatch/v1/a/readings",
        "kilowatch/v1/a/b/c/readings",
        "kilowatch/v1/a/b/nonsense",
    ):
        with pytest.raises(ValueError, match="topic"):
            parse_topic(bad)
