"""Day blocks of readings: what goes in comes out, bit for bit."""

from __future__ import annotations

import numpy as np

from collector.store.blocks import Block, decode, encode

NAN = float("nan")


def block(ts: list[int], power: list[float], quality: list[str | None] | None = None) -> Block:
    n = len(ts)
    moving = np.full((n, 7), np.nan, dtype=np.float32)
    moving[:, 0] = [230.1 + i / 10 for i in range(n)]
    moving[:, 3] = 50.0
    return Block(
        np.array(ts, dtype=np.int64),
        np.array([1000.5 + i * 0.01 for i in range(n)]),
        np.full(n, NAN),
        np.array(power),
        moving,
        quality or [None] * n,
        ["unsynced" if i == 1 else None for i in range(n)],
    )


def same(a: Block, b: Block) -> bool:
    return (
        np.array_equal(a.ts, b.ts)
        and all(
            np.array_equal(getattr(a, c), getattr(b, c), equal_nan=True)
            for c in ("imported", "exported", "power", "moving")
        )
        and (a.quality, a.clock) == (b.quality, b.clock)
    )


def test_a_block_decodes_to_what_was_encoded() -> None:
    original = block([1_790_000_000_000 + i * 60_123 for i in range(5)], [2500.5, NAN, -3.25, 1e9, 0.0])
    original = Block(
        original.ts, original.imported, original.exported, original.power, original.moving,
        [None, "bad", None, "stale", "bad"], original.clock,
    )  # fmt: skip
    assert same(decode(encode(original)), original)
    empty = block([], [])
    assert len(decode(encode(empty))) == 0


def test_joined_blocks_are_in_time_order_and_the_later_block_wins_a_repeated_ts() -> None:
    older = block([10, 30, 50], [1.0, 3.0, 5.0])
    newer = block([20, 30, 60], [2.0, 33.0, 6.0], ["stale", "bad", None])
    joined = Block.join([older, newer])
    assert joined.ts.tolist() == [10, 20, 30, 50, 60]
    assert joined.power.tolist() == [1.0, 2.0, 33.0, 5.0, 6.0]
    assert joined.quality == [None, "stale", "bad", None, None]
