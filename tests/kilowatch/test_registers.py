"""Register codec against hand-computed words, for every type and every word/byte order."""

from __future__ import annotations

import math

import pytest

from kilowatch.registers import DataType, WordOrder, decode, encode, register_count

# (type, value, {order: words}) — words worked out by hand from the IEEE-754 / two's-complement bytes.
CASES = [
    (
        DataType.FLOAT32,
        1.0,
        {
            "ABCD": [0x3F80, 0x0000],
            "CDAB": [0x0000, 0x3F80],
            "BADC": [0x803F, 0x0000],
            "DCBA": [0x0000, 0x803F],
        },
    ),
    (
        DataType.FLOAT32,
        -2.5,
        {
            "ABCD": [0xC020, 0x0000],
            "CDAB": [0x0000, 0xC020],
            "BADC": [0x20C0, 0x0000],
            "DCBA": [0x0000, 0x20C0],
        },
    ),
    (
        DataType.INT32,
        -2,
        {
            "ABCD": [0xFFFF, 0xFFFE],
            "CDAB": [0xFFFE, 0xFFFF],
            "BADC": [0xFFFF, 0xFEFF],
            "DCBA": [0xFEFF, 0xFFFF],
        },
    ),
    (
        DataType.UINT32,
        0x12345678,
        {
            "ABCD": [0x1234, 0x5678],
            "CDAB": [0x5678, 0x1234],
            "BADC": [0x3412, 0x7856],
            "DCBA": [0x7856, 0x3412],
        },
    ),
    (DataType.INT16, -1, {"ABCD": [0xFFFF], "CDAB": [0xFFFF], "BADC": [0xFFFF], "DCBA": [0xFFFF]}),
    (DataType.UINT16, 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    (
        DataType.INT64,
        -3,
        {
            "ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD],
            "CDAB": [0xFFFD, 0xFFFF, 0xFFFF, 0xFFFF],
            "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFDFF],
            "DCBA": [0xFDFF, 0xFFFF, 0xFFFF, 0xFFFF],
        },
    ),
    (
        DataType.UINT64,
        0x0102030405060708,
        {
            "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
            "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
            "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
            "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    (
        DataType.FLOAT64,
        1.0,
        {
            "ABCD": [0x3FF0, 0, 0, 0],
            "CDAB": [0, 0, 0, 0x3FF0],
            "BADC": [0xF03F, 0, 0, 0],
            "DCBA": [0, 0, 0, 0xF03F],
        },
    ),
]


@pytest.mark.parametrize(("data_type", "value", "words_by_order"), CASES)
@pytest.mark.parametrize("order", list(WordOrder))
def test_decode_and_encode_match_hand_computed_words(
    data_type: DataType, value: float, words_by_order: dict[str, list[int]], order: WordOrder
) -> None:
    words = words_by_order[order.value]
    assert decode(words, data_type, order) == value
    assert encode(value, data_type, order) == words
    assert register_count(data_type) == len(words)


def test_string_round_trip_pads_and_strips() -> None:
    words = encode("SDM630", DataType.STRING, WordOrder.ABCD, length=4)
    assert words == [0x5344, 0x4D36, 0x3330, 0x0000]
    assert decode(words, DataType.STRING) == "SDM630"
    assert (
        decode(encode("SDM630", DataType.STRING, WordOrder.BADC, length=4), DataType.STRING, WordOrder.BADC)
        == "SDM630"
    )


def test_nan_decodes_as_nan() -> None:
    assert math.isnan(float(decode([0x7FC0, 0x0000], DataType.FLOAT32)))


def test_wrong_word_count_and_out_of_range_words_are_refused() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode([0x3F80], DataType.FLOAT32)
    with pytest.raises(ValueError, match="not a 16-bit value"):
        decode([0x10000, 0], DataType.FLOAT32)
    with pytest.raises(ValueError, match="length"):
        register_count(DataType.STRING)
