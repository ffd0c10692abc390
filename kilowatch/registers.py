"""Pure conversion between 16-bit Modbus register words and numbers; no I/O.

The agent decodes with it and the simulator encodes with it, so both agree by construction. We do not use
pymodbus' ``convert_from_registers`` because it has no byte-swapped orders (BADC, DCBA) and the simulator,
which must not depend on a client library's conventions, needs the exact inverse.

Word order names follow the usual convention for a value whose big-endian bytes are A B C D (…):
``ABCD`` big-endian words and bytes; ``CDAB`` words swapped; ``BADC`` bytes swapped in each word;
``DCBA`` both. For 64-bit values the same rule applies word by word.
"""

from __future__ import annotations

import struct
from enum import StrEnum


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


class WordOrder(StrEnum):
    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


_FORMATS: dict[DataType, str] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


INTEGER_BITS: dict[DataType, int] = {
    DataType.INT16: 16, DataType.UINT16: 16, DataType.INT32: 32,
    DataType.UINT32: 32, DataType.INT64: 64, DataType.UINT64: 64,
}  # fmt: skip
"""Width of each integer type."""
SIGNED = frozenset({DataType.INT16, DataType.INT32, DataType.INT64})


def representable(value: float, data_type: DataType) -> bool:
    """Whether `value` can be read from a register of `data_type`: an integer type's signed or unsigned
    reading of its bits, so both -32768 and 0x8000 are representable in an int16."""
    bits = INTEGER_BITS.get(data_type)
    if bits is None:
        return data_type is not DataType.STRING
    return float(value).is_integer() and -(1 << (bits - 1)) <= value < (1 << bits)


def register_count(data_type: DataType, length: int | None = None) -> int:
    """How many 16-bit registers a value of `data_type` occupies (`length` registers for strings)."""
    if data_type is DataType.STRING:
        if not length:
            raise ValueError("a string needs its length in registers")
        return length
    return struct.calcsize(_FORMATS[data_type]) // 2


def _reorder(raw: bytes, order: WordOrder) -> bytes:
    """Map big-endian bytes to wire order; the mapping is its own inverse."""
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in (WordOrder.CDAB, WordOrder.DCBA):
        words.reverse()
    if order in (WordOrder.BADC, WordOrder.DCBA):
        words = [w[::-1] for w in words]
    return b"".join(words)


def _to_bytes(words: list[int]) -> bytes:
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise ValueError(f"register word {w} is not a 16-bit value")
    return b"".join(w.to_bytes(2, "big") for w in words)


def decode(words: list[int], data_type: DataType, order: WordOrder = WordOrder.ABCD) -> float | int | str:
    """Decode register words as read from the wire into a number (or a string)."""
    raw = _reorder(_to_bytes(words), order)
    if data_type is DataType.STRING:
        return raw.rstrip(b"\x00 ").decode("ascii", errors="replace")
    fmt = _FORMATS[data_type]
    if len(raw) != struct.calcsize(fmt):
        raise ValueError(f"{data_type} needs {struct.calcsize(fmt) // 2} registers, got {len(words)}")
    value: float | int = struct.unpack(fmt, raw)[0]
    return value


def encode(
    value: float | int | str,
    data_type: DataType,
    order: WordOrder = WordOrder.ABCD,
    length: int | None = None,
) -> list[int]:
    """Encode a value into register words in wire order: the exact inverse of :func:`decode`."""
    if data_type is DataType.STRING:
        n = register_count(data_type, length)
        raw = str(value).encode("ascii")[: 2 * n].ljust(2 * n, b"\x00")
    elif isinstance(value, str):
        raise TypeError(f"{data_type} needs a number, got a string")
    else:
        fmt = _FORMATS[data_type]
        floating = data_type in (DataType.FLOAT32, DataType.FLOAT64)
        raw = struct.pack(fmt, value if floating or isinstance(value, int) else round(value))
    wire = _reorder(raw, order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]
