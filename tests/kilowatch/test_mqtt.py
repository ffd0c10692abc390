"""The MQTT contract: topics, models, and the published JSON Schema agree with each other."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from kilowatch.mqtt_contract import (
    INT64_MAX,
    MESSAGES,
    TS_FLOOR_MS,
    Channel,
    GatewayEvent,
    GatewayStatus,
    Quality,
    ReadingsBatch,
    TimeWindow,
    parse_topic,
    subscription,
    topic,
)
from kilowatch.profiles_cli import schema_documents
from kilowatch.quantities import QUANTITIES, out_of_range
from tests.paths import REPO

DOCS = REPO / "docs"
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
        "readings": [{**doc["readings"][0], "value_quality": {}, "value_reasons": {}}],
    }


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (batch(reading={"values": {"watts": 1.0}}), "watts"),
        (batch(schema_version=2), "schema_version"),
        (batch(site="Office/1"), "site"),
        (batch(seq=-1), "seq"),
        (batch(readings=[]), "readings"),
        (batch(reading={"quality": "poor"}), "quality"),
        (batch(seq=INT64_MAX + 1), "seq"),
        (batch(sent_at=2**64), "sent_at"),
        (batch(reading={"ts": INT64_MAX + 1}), "ts"),
        (batch(reading={"mono_ms": 2**63}), "mono_ms"),
        (batch(reading={"ts": 0}), "ts"),
        (batch(reading={"ts": TS_FLOOR_MS - 1, "clock": "corrected"}), "ts"),
        (batch(reading={"value_reasons": {"active_power_w": "x" * 201}}), "value_reasons"),
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


STATUS = {
    "schema_version": 1,
    "site": "office-1",
    "gateway": "gw-1",
    "state": "online",
    "ts": 1_795_000_000_000,
    "agent_version": "1",
}
EVENT = {
    "schema_version": 1,
    "site": "office-1",
    "gateway": "gw-1",
    "ts": 1_795_000_000_000,
    "kind": "spool_evicted",
    "readings": 3,
    "detail": "evicted",
}


@pytest.mark.parametrize(
    ("model", "stem", "doc", "field"),
    [
        (GatewayStatus, "gateway-status", STATUS | {"ts": 2**63}, "ts"),
        (GatewayEvent, "gateway-event", EVENT | {"ts": 2**63}, "ts"),
        (GatewayEvent, "gateway-event", EVENT | {"readings": 2**63}, "readings"),
        (GatewayEvent, "gateway-event", EVENT | {"newest_ts": 2**64}, "newest_ts"),
    ],
)
def test_every_integer_fits_int64_in_the_model_and_the_schema(
    model: type[GatewayStatus | GatewayEvent], stem: str, doc: dict[str, Any], field: str
) -> None:
    """A larger integer passed ``ge=0`` and then overflowed the collector's SQLite (issue 16, finding 1)."""
    jsonschema.validate({**doc, field: INT64_MAX}, published_schema(stem))
    model.model_validate({**doc, field: INT64_MAX})
    with pytest.raises(ValidationError, match=field):
        model.model_validate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, published_schema(stem))


def test_only_a_clock_that_knew_it_was_wrong_may_stamp_before_2000() -> None:
    for clock in ("unsynced", "unknown"):
        doc = batch(reading={"ts": 5_000, "clock": clock})
        jsonschema.validate(doc, published_schema("readings-batch"))
        assert ReadingsBatch.model_validate(doc).readings[0].ts == 5_000
    doc = batch(reading={"ts": TS_FLOOR_MS})
    jsonschema.validate(doc, published_schema("readings-batch"))
    ReadingsBatch.model_validate(doc)


def test_the_time_window_is_relative_to_the_receivers_clock() -> None:
    now = 1_795_000_000_000
    window = TimeWindow(future_ms=60_000, past_ms=86_400_000)
    assert window.problem(now, now) is None
    assert window.problem(now + 60_000, now) is None
    assert window.problem(now - 86_400_000, now) is None
    assert "ahead" in str(window.problem(now + 60_001, now))
    assert "older" in str(window.problem(now - 86_400_001, now))
    assert "older" in str(TimeWindow(past_ms=INT64_MAX).problem(TS_FLOOR_MS - 1, now))


def test_every_quantity_has_a_physical_range_and_impossible_values_are_named() -> None:
    for q in QUANTITIES.values():
        assert q.minimum < q.maximum, q.name
        assert out_of_range(q.name, q.minimum) is None
        assert out_of_range(q.name, q.maximum) is None
    assert QUANTITIES["power_factor"].maximum == 1.0
    assert QUANTITIES["energy_import_kwh"].minimum == 0.0
    assert out_of_range("voltage_l1_v", 3.4e18) == "3.4e+18 V is outside the physical range 0..1e+06 V"
    assert out_of_range("frequency_hz", float("nan")) == "nan is not a finite number"


def test_an_impossible_value_is_bad_with_its_reason_and_the_rest_of_the_batch_stands() -> None:
    """The sender must not send it (the schema refuses it); a receiver that gets one anyway keeps the
    reading and its batch, with the value out of `values` as bad, never good."""
    doc = batch(reading={"values": {"active_power_w": 1234.5, "voltage_l1_v": 3.4e18, "power_factor": -1.5}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, published_schema("readings-batch"))
    reading = ReadingsBatch.model_validate(doc).readings[0]
    assert reading.values == {"active_power_w": 1234.5}
    assert reading.quality is Quality.BAD
    assert reading.value_quality == {"voltage_l1_v": Quality.BAD, "power_factor": Quality.BAD}
    assert reading.value_reasons["power_factor"] == "-1.5 1 is outside the physical range -1..1 1"
    # What the sender should have sent passes both, and round-trips unchanged.
    sent = json.loads(ReadingsBatch.model_validate(doc).model_dump_json())
    jsonschema.validate(sent, published_schema("readings-batch"))
    assert ReadingsBatch.model_validate(sent).readings[0] == reading
    # A worse quality stays; bad never hides an error.
    errs = batch(
        reading={
            "values": {"frequency_hz": -3.0},
            "quality": "error",
            "value_quality": {"active_power_w": "error"},
        }
    )
    assert ReadingsBatch.model_validate(errs).readings[0].quality is Quality.ERROR


def test_a_value_marked_bad_is_not_sent() -> None:
    doc = batch(reading={"quality": "bad", "value_quality": {"active_power_w": "bad"}})
    with pytest.raises(ValidationError, match="marked bad"):
        ReadingsBatch.model_validate(doc)
