"""Validation of MQTT messages: pydantic's one-step JSON validation accepts and refuses exactly what the
two-step path (json.loads, then the model) does, and a refused message still says why."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest
from pydantic import ValidationError

from collector.metrics import RejectReason
from collector.validate import Rejected, parse_message
from kilowatch.mqtt_contract import Channel, Quality, ReadingsBatch, topic
from kilowatch.quantities import QUANTITIES
from tests.collector_support import at, batch, reading

READINGS = topic("site1", "gw1", Channel.READINGS)
ROOT = "kilowatch/v1"
BASE = batch(reading(at(10), imp=1.0, power_w=5.0)).model_dump_json()


def two_steps(payload: bytes) -> ReadingsBatch | None:
    """What validation gave before the fast path (None: refused)."""
    try:
        return ReadingsBatch.model_validate(json.loads(payload))
    except ValueError:  # ValidationError and JSONDecodeError alike
        return None


def parsed(payload: bytes) -> ReadingsBatch | None:
    try:
        message = parse_message(READINGS, payload, root=ROOT)
    except Rejected:
        return None
    assert isinstance(message, ReadingsBatch)
    return message


def random_number_texts(rng: random.Random, n: int) -> list[str]:
    """JSON numbers of every shape: any double's repr, long decimals, huge and tiny exponents, big ints."""
    texts = []
    for i in range(n):
        match i % 4:
            case 0:
                texts.append(repr(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]))
            case 1:
                texts.append(f"{rng.uniform(-1e6, 1e6):.{rng.randint(1, 25)}f}")
            case 2:
                texts.append(f"{rng.randint(0, 10 ** rng.randint(1, 30))}e{rng.randint(-330, 330)}")
            case _:
                texts.append(f"{rng.randint(-(10**20), 10**20)}.{rng.randint(0, 10**20)}")
    return [t for t in texts if t not in ("nan", "inf", "-inf")]


def test_values_are_read_bit_for_bit_as_json_loads_reads_them() -> None:
    for text in random_number_texts(random.Random(1), 2000):
        payload = BASE.replace('"active_power_w":5.0', f'"active_power_w":{text}').encode()
        got, want = parsed(payload), two_steps(payload)
        assert (got is None) == (want is None), text
        if got is not None and want is not None:
            # NaN for both when the value is beyond physical range: then it is bad, out of `values`
            a, b = (m.readings[0].values.get("active_power_w", math.nan) for m in (got, want))
            assert struct.pack("<d", a) == struct.pack("<d", b), text


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"seq":0', '"seq":true'),
        ('"seq":0', '"seq":"0"'),
        ('"seq":0', '"seq":1e0'),
        ('"seq":0', '"seq":99999999999999999999999'),
        ('"active_power_w":5.0', '"active_power_w":NaN'),
        ('"active_power_w":5.0', '"active_power_w":Infinity'),
        ('"active_power_w":5.0', '"active_power_w":1e999'),
        ('"active_power_w":5.0', '"active_power_w":"5"'),
        ('"site":"site1"', '"site":"site1","site":"site1"'),
        ('"schema_version":1', '"schema_version":1.0'),
        ('"schema_version":1', '"schema_version":"1"'),
        ('"quality":"good"', '"quality":"GOOD"'),
        ('"meter":"m1"', '"meter":"m\\u0031"'),
        ('"meter":"m1"', '"meter":"m1\\ud800"'),
    ],
)
def test_edge_cases_are_accepted_or_refused_as_before(old: str, new: str) -> None:
    assert old in BASE
    payload = BASE.replace(old, new, 1).encode()
    assert parsed(payload) == two_steps(payload)


def with_value(name: str, value: float) -> bytes:
    doc = json.loads(BASE)
    doc["readings"][0]["values"][name] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize("name", list(QUANTITIES))
def test_the_fast_path_holds_every_value_to_its_physical_range_and_a_value_outside_is_made_bad(
    name: str,
) -> None:
    """Strict validation (the fast path) checks each quantity's range in pydantic-core, so a reading costs
    no Python per value; a value outside fails it, and the lax validation after it makes that value bad
    with its reason, as the two-step path does."""
    q = QUANTITIES[name]
    for value in (q.minimum, q.maximum):
        payload = with_value(name, value)
        assert ReadingsBatch.model_validate_json(payload, strict=True) == two_steps(payload)
    for value in (q.minimum - max(1.0, abs(q.minimum)), q.maximum + max(1.0, abs(q.maximum))):
        payload = with_value(name, value)
        with pytest.raises(ValidationError, match=name):
            ReadingsBatch.model_validate_json(payload, strict=True)
        got = parsed(payload)
        assert got is not None
        assert got == two_steps(payload)
        assert name not in got.readings[0].values
        assert got.readings[0].value_quality[name] is Quality.BAD
        assert "outside the physical range" in got.readings[0].value_reasons[name]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_json_in_another_unicode_encoding_is_still_accepted(encoding: str) -> None:
    """json.loads reads UTF-16/32 and a BOM, pydantic's parser does not: the slow path still takes them."""
    assert parsed(BASE.encode(encoding)) == ReadingsBatch.model_validate_json(BASE)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe\x00 not json \x80", RejectReason.INVALID_JSON),
        (b"[" * 100_000, RejectReason.INVALID_JSON),
        (
            BASE.replace('"schema_version":1', '"schema_version":2').encode(),
            RejectReason.UNSUPPORTED_SCHEMA_VERSION,
        ),
        (BASE.replace('"seq":0', '"seq":-1').encode(), RejectReason.INVALID_SCHEMA),
        (BASE.replace('"site":"site1"', '"site":"site2"').encode(), RejectReason.TOPIC_MISMATCH),
    ],
)
def test_a_refused_message_says_why(payload: bytes, reason: RejectReason) -> None:
    with pytest.raises(Rejected) as refused:
        parse_message(READINGS, payload, root=ROOT)
    assert refused.value.reason is reason
