"""The compiled plan decoder against the profile's reference decoding, and values at the meter's
precision."""

from __future__ import annotations

import math
import random
import struct

import pytest

from agent.decoder import FLOAT32_MAX, PlanDecoder, shortest_float32, tidy
from agent.planner import plan
from kilowatch.profiles import Ratios, Register, Table, builtin_ids, load_builtin
from kilowatch.registers import DataType


def same(a: float | None, b: float | None, data_type: DataType) -> bool:
    if a is None or b is None:
        return a is b
    # float32 values are given at float32 precision; scaled integers to 15 significant digits
    if data_type is DataType.FLOAT32 and abs(b) <= FLOAT32_MAX:
        return struct.pack("<f", a) == struct.pack("<f", b)
    return math.isclose(a, b, rel_tol=1e-14)


@pytest.mark.parametrize("profile_id", builtin_ids())
def test_decodes_like_the_profile_for_every_shipped_profile(profile_id: str) -> None:
    profile = load_builtin(profile_id)
    requests = plan(profile)
    ratios = Ratios(ct=20, vt=2)
    decoder = PlanDecoder(profile, requests, ratios)
    rng = random.Random(profile_id)
    sentinels = [int(s) for reg in profile.registers for s in reg.nan_sentinels if 0 <= s <= 0xFFFF]
    for trial in range(50):
        answers: list[list[int] | None] = []
        words: dict[tuple[Table, int], int] = {}
        for i, request in enumerate(requests):
            if trial % 7 == 3 and i == len(requests) - 1:
                answers.append(None)  # a failed request
                continue
            answer = [rng.choice([*sentinels, 0xFFFF, 0x7FFF, 0x8000]) if rng.random() < 0.1 else rng.getrandbits(16)
                      for _ in range(request.count)]  # fmt: skip
            answers.append(answer)
            words.update(((request.table, request.address + j), w) for j, w in enumerate(answer))
        expected = profile.decode(words, ratios)
        got = decoder.decode(answers)
        assert set(got) == set(expected)
        types = {reg.quantity: reg.type for reg in profile.registers}
        wrong = {q: (got[q], expected[q]) for q in got if not same(got[q], expected[q], types[q])}
        assert not wrong, wrong


def test_word_orders_and_byte_swaps() -> None:
    base = load_builtin("eastron-sdm630")
    orders = [
        ("voltage_l1_v", "ABCD", "float32"),
        ("voltage_l2_v", "CDAB", "float32"),
        ("voltage_l3_v", "BADC", "int32"),
        ("current_l1_a", "DCBA", "uint32"),
    ]
    registers = [
        Register.model_validate({"quantity": q, "address": 2 * i, "word_order": order, "type": data_type})
        for i, (q, order, data_type) in enumerate(orders)
    ]
    profile = base.model_copy(update={"registers": registers})
    requests = plan(profile)
    decoder = PlanDecoder(profile, requests)
    wire = {
        0: struct.pack(">f", 230.5),
        2: struct.pack(">f", 231.25)[2:] + struct.pack(">f", 231.25)[:2],
        4: bytes([0x00, 0x00, 0xE8, 0x00]),  # BADC of 0x000000E8 = 232
        6: struct.pack("<I", 12),
    }
    raw = b"".join(wire[a] for a in sorted(wire))
    answer = list(struct.unpack(f">{len(raw) // 2}H", raw))
    assert [(r.address, r.count) for r in requests] == [(0, 8)]
    assert decoder.decode([answer]) == {
        "voltage_l1_v": 230.5,
        "voltage_l2_v": 231.25,
        "voltage_l3_v": 232.0,
        "current_l1_a": 12.0,
    }


def test_a_float32_is_given_with_the_digits_it_has() -> None:
    widened = struct.unpack(">f", struct.pack(">f", 221.964))[0]
    assert widened == 221.96400451660156
    assert repr(shortest_float32(widened)) == "221.964"
    assert shortest_float32(50.0) == 50.0
    rng = random.Random(19)
    for _ in range(10_000):
        value = struct.unpack(">f", struct.pack(">I", rng.getrandbits(32)))[0]
        if not math.isfinite(value):
            continue
        short = shortest_float32(value)
        assert struct.pack(">f", short) == struct.pack(">f", value)  # the same float32
        assert len(repr(short)) <= len(repr(value))
    assert repr(tidy(2301 * 0.1)) == "230.1"
