"""Every interpretation of raw words, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from agent.raw_decode import decodings
from kilowatch.registers import DataType, WordOrder

A, C, B, D = WordOrder.ABCD, WordOrder.CDAB, WordOrder.BADC, WordOrder.DCBA


def by_key(words: list[int]) -> dict[tuple[int, DataType, WordOrder], float | int | str]:
    found = decodings(words)
    keys = [(d.offset, d.type, d.order) for d in found]
    assert len(keys) == len(set(keys)), "each interpretation appears once"
    return {(d.offset, d.type, d.order): d.value for d in found}


def test_sixteen_bit_values_of_every_word() -> None:
    got = by_key([0xFFFE, 0x0102])
    assert got[(0, DataType.INT16, A)] == -2
    assert got[(0, DataType.UINT16, A)] == 65534
    assert got[(1, DataType.INT16, A)] == 258
    assert got[(1, DataType.UINT16, A)] == 258


def test_thirty_two_bit_integers_in_every_order() -> None:
    got = by_key([0x0102, 0x0304])
    assert got[(0, DataType.UINT32, A)] == 0x01020304 == 16909060
    assert got[(0, DataType.UINT32, C)] == 0x03040102
    assert got[(0, DataType.UINT32, B)] == 0x02010403
    assert got[(0, DataType.UINT32, D)] == 0x04030201
    assert by_key([0xFFFF, 0xFFFE])[(0, DataType.INT32, A)] == -2
    assert by_key([0xFFFE, 0xFFFF])[(0, DataType.INT32, C)] == -2


@pytest.mark.parametrize(
    ("words", "order"),
    [
        ([0x4120, 0x0000], A),  # 10.0 is 0x41200000
        ([0x0000, 0x4120], C),
        ([0x2041, 0x0000], B),
        ([0x0000, 0x2041], D),
    ],
)
def test_float32_ten_in_each_order(words: list[int], order: WordOrder) -> None:
    got = by_key(words)
    assert got[(0, DataType.FLOAT32, order)] == 10.0
    assert [o for o in WordOrder if got[(0, DataType.FLOAT32, o)] == 10.0] == [order]


def test_sdm630_voltage_words() -> None:
    assert by_key([0x4366, 0x0000])[(0, DataType.FLOAT32, A)] == 230.0


def test_sixty_four_bit_values_in_every_order() -> None:
    got = by_key([0x0102, 0x0304, 0x0506, 0x0708])
    assert got[(0, DataType.UINT64, A)] == 0x0102030405060708
    assert got[(0, DataType.UINT64, C)] == 0x0708050603040102
    assert got[(0, DataType.UINT64, B)] == 0x0201040306050807
    assert got[(0, DataType.UINT64, D)] == 0x0807060504030201
    assert by_key([0xFFFF] * 4)[(0, DataType.INT64, D)] == -1
    for words, order in [
        ([0x3FF0, 0, 0, 0], A),
        ([0, 0, 0, 0x3FF0], C),
        ([0xF03F, 0, 0, 0], B),
        ([0, 0, 0, 0xF03F], D),
    ]:
        assert by_key(words)[(0, DataType.FLOAT64, order)] == 1.0


def test_ascii_text_straight_and_byte_swapped() -> None:
    got = by_key([0x5344, 0x4D36, 0x3330])  # "SDM630"
    assert got[(0, DataType.STRING, A)] == "SDM630"
    assert got[(0, DataType.STRING, B)] == "DS6M03"


def test_wide_values_are_aligned_to_the_first_word() -> None:
    found = decodings([0x4366, 0x0000, 0x4367, 0x8000, 0x0000])
    floats = [d for d in found if d.type is DataType.FLOAT32 and d.order is A]
    assert [(d.offset, d.count, d.value) for d in floats] == [(0, 2, 230.0), (2, 2, 231.5)]
    assert {d.offset for d in found if d.count == 4} == {0}
    # 5 words: 10 sixteen-bit, 2 x 3 types x 4 orders of 32 bits, 3 x 4 of 64 bits, 2 strings
    assert len(found) == 10 + 24 + 12 + 2


def test_nan_is_shown_not_hidden() -> None:
    got = by_key([0x7FC0, 0x0000])
    value = got[(0, DataType.FLOAT32, A)]
    assert isinstance(value, float)
    assert math.isnan(value)


def test_too_few_words_give_only_what_fits() -> None:
    assert decodings([]) == []
    one = decodings([0x0041])
    assert {d.type for d in one} == {DataType.INT16, DataType.UINT16, DataType.STRING}
    assert [d.value for d in one if d.type is DataType.STRING] == ["\x00A", "A"]


def test_words_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        decodings([0x10000])
