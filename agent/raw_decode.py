"""Every way a run of raw register words can be read: pure, no I/O.

A technician facing an undocumented meter reads a few registers and compares the candidates with the
meter's display; the one that matches gives the data type and word order for the profile. Values are
aligned to the first word read, as the manual's register table is: a 32-bit value at offsets 0, 2, 4...
"""

from __future__ import annotations

from dataclasses import dataclass

from kilowatch.registers import DataType, WordOrder, decode, register_count

SIXTEEN_BIT = (DataType.INT16, DataType.UINT16)
WIDE = (
    DataType.INT32,
    DataType.UINT32,
    DataType.FLOAT32,
    DataType.INT64,
    DataType.UINT64,
    DataType.FLOAT64,
)
STRING_ORDERS = (WordOrder.ABCD, WordOrder.BADC)
"""Strings come high byte first or byte-swapped; reversing the words of a string is not seen in the field."""


@dataclass(frozen=True)
class Decoding:
    """One interpretation of some of the words."""

    offset: int
    """Index of the first word used (0 = the address read)."""
    count: int
    """Words used."""
    type: DataType
    order: WordOrder
    """ABCD for 16-bit values, whose single word has no word order to choose."""
    value: float | int | str


def decodings(words: list[int]) -> list[Decoding]:
    """Every 16-bit, 32-bit and 64-bit value in every word order, then the words as ASCII text."""
    out = [
        Decoding(offset, 1, data_type, WordOrder.ABCD, decode([word], data_type))
        for offset, word in enumerate(words)
        for data_type in SIXTEEN_BIT
    ]
    for data_type in WIDE:
        width = register_count(data_type)
        for offset in range(0, len(words) - width + 1, width):
            chunk = words[offset : offset + width]
            out.extend(
                Decoding(offset, width, data_type, order, decode(chunk, data_type, order))
                for order in WordOrder
            )
    if words:
        out.extend(
            Decoding(0, len(words), DataType.STRING, order, decode(words, DataType.STRING, order))
            for order in STRING_ORDERS
        )
    return out
