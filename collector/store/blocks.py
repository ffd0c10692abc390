"""A day of one meter's readings packed into one compressed blob (``reading_blocks.data``); no SQL here.

Readings older than a few days (``ledger.retention.compact_after_days``) are no longer written to: the
retention task moves them from ``readings`` (a row each, ~78 bytes) into a block per meter and local
(Vietnam) day (~32 bytes a reading). A block is columnar, so that what is alike lies together: timestamps as deltas,
each float column as the XOR of its bit pattern with the one before (consecutive readings of a meter share
sign, exponent and leading digits, which this turns into zero bytes; exact, unlike a subtraction), every
column byte-shuffled (its first bytes together, then its second...), then zlib. The same quantities as a
row: counters and power as float64 (NaN where missing), the :data:`~collector.detectors.series.MOVING`
quantities as float32, quality and clock only where not good and synced.

numpy and zlib do the work; a hand-written Gorilla or a TSDB's codec would pack tighter, but is one more
format to keep, where this one is a few vectorised lines.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from collector.detectors.series import MOVING

_HEADER = struct.Struct("<BIH")
"""Format version, readings, length of the JSON of the quality and clock names that follow."""
_VERSION = 1
_MOVING = len(MOVING)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Block:
    """Readings of one meter in time order, as parallel arrays."""

    ts: Ints
    imported: Floats
    exported: Floats
    power: Floats
    """NaN where the reading had none."""
    moving: npt.NDArray[np.float32]
    """A row per reading, a column per MOVING quantity; NaN where missing."""
    quality: list[str | None]
    clock: list[str | None]
    """None: good, synced."""

    def __len__(self) -> int:
        return int(self.ts.size)

    def where(self, keep: npt.NDArray[np.bool_] | Ints) -> Block:
        """The readings `keep` selects (a mask or indexes)."""
        picked = np.arange(len(self))[keep].tolist()
        return Block(
            self.ts[keep], self.imported[keep], self.exported[keep], self.power[keep], self.moving[keep],
            [self.quality[i] for i in picked], [self.clock[i] for i in picked],
        )  # fmt: skip

    @staticmethod
    def join(blocks: list[Block]) -> Block:
        """The blocks' readings (at least one block) in time order; of a ts in several, the last block's."""
        if len(blocks) == 1:
            return blocks[0]
        ts = np.concatenate([b.ts for b in blocks])
        joined = Block(
            ts,
            np.concatenate([b.imported for b in blocks]),
            np.concatenate([b.exported for b in blocks]),
            np.concatenate([b.power for b in blocks]),
            np.concatenate([b.moving for b in blocks]),
            [q for b in blocks for q in b.quality],
            [c for b in blocks for c in b.clock],
        )
        if bool(np.all(ts[1:] > ts[:-1])):
            return joined
        order = np.argsort(ts, kind="stable")
        last = np.append(ts[order][1:] != ts[order][:-1], True)  # stable: the later block's stays last
        return joined.where(order[last])


def _xor(bits: npt.NDArray[np.unsignedinteger[Any]]) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Each value XOR the one before (the first as it is): :func:`numpy.bitwise_xor.accumulate` undoes it."""
    previous = np.concatenate((np.zeros(1, bits.dtype), bits[:-1]))
    result: npt.NDArray[np.unsignedinteger[Any]] = np.bitwise_xor(bits, previous)
    return result


def _shuffled(column: npt.NDArray[np.generic]) -> bytes:
    return np.ascontiguousarray(column.view(np.uint8).reshape(column.size, column.itemsize).T).tobytes()


def _unshuffled(data: bytes, n: int, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
    width = np.dtype(dtype).itemsize
    return np.ascontiguousarray(np.frombuffer(data, np.uint8).reshape(width, n).T).view(dtype).reshape(n)


def _codes(names: list[str | None]) -> tuple[list[str], npt.NDArray[np.uint8]]:
    distinct = sorted({name for name in names if name is not None})
    index = {name: i + 1 for i, name in enumerate(distinct)}
    return distinct, np.array([0 if name is None else index[name] for name in names], dtype=np.uint8)


def encode(block: Block) -> bytes:
    n = len(block)
    qualities, quality_codes = _codes(block.quality)
    clocks, clock_codes = _codes(block.clock)
    columns = [
        _shuffled(np.diff(block.ts, prepend=np.int64(0))),
        *(_shuffled(_xor(c.view(np.uint64))) for c in (block.imported, block.exported, block.power)),
        *(_shuffled(_xor(np.ascontiguousarray(block.moving[:, i]).view(np.uint32))) for i in range(_MOVING)),
        quality_codes.tobytes(),
        clock_codes.tobytes(),
    ]
    names = json.dumps([qualities, clocks]).encode()
    return _HEADER.pack(_VERSION, n, len(names)) + names + zlib.compress(b"".join(columns), 6)


def decode(data: bytes) -> Block:
    version, n, names_size = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"reading block format {version} is not {_VERSION}")
    start = _HEADER.size
    qualities, clocks = json.loads(data[start : start + names_size])
    raw = zlib.decompress(data[start + names_size :])
    at = 0

    def take(dtype: type[np.generic]) -> npt.NDArray[np.generic]:
        nonlocal at
        size = np.dtype(dtype).itemsize * n
        column = _unshuffled(raw[at : at + size], n, dtype)
        at += size
        return column

    def floats() -> Floats:
        return np.bitwise_xor.accumulate(take(np.uint64)).view(np.float64)

    ts = np.cumsum(take(np.int64), dtype=np.int64)
    imported, exported, power = floats(), floats(), floats()
    moving = np.empty((n, _MOVING), dtype=np.float32)
    for i in range(_MOVING):
        moving[:, i] = np.bitwise_xor.accumulate(take(np.uint32)).view(np.float32)
    quality_codes, clock_codes = np.frombuffer(raw, np.uint8, n, at), np.frombuffer(raw, np.uint8, n, at + n)
    return Block(
        ts,
        imported,
        exported,
        power,
        moving,
        [None if c == 0 else qualities[c - 1] for c in quality_codes.tolist()],
        [None if c == 0 else clocks[c - 1] for c in clock_codes.tolist()],
    )
