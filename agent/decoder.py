"""Decoding a read plan's answers in one step per request: pure, no I/O.

:meth:`kilowatch.profiles.Profile.decode` is the reference (a dict of words by address, one value at a
time); on the agent's hot path it costs more than the rest of a poll, so the plan is compiled once per
meter instead: each request's answer is unpacked by one precompiled :class:`struct.Struct` (words
reversed first where a value is stored low word first), sentinels are looked up only for the registers
that have them, and the multipliers (scale, 10^scale_factor, CT/VT ratios) are computed once unless the
meter holds them in parameters read with the values.

Values are given at the precision the meter has, so messages carry no digits that mean nothing: a
float32 as the shortest decimal that reads back as the same float32 (``221.964``, not
``221.96400451660156``), a scaled integer without the binary noise of the multiplication (``230.1``, not
``230.10000000000002``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from agent.planner import Request
from kilowatch.profiles import Located, Parameter, Profile, Ratios, Register
from kilowatch.registers import INTEGER_BITS, DataType, WordOrder

CODES = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
REVERSED = (WordOrder.CDAB, WordOrder.BADC)
"""Orders whose words are reversed relative to big-endian (before any byte swap)."""
BYTE_SWAPPED = (WordOrder.BADC, WordOrder.DCBA)
"""Orders whose value is little-endian once its words are in place."""
_FLOAT32 = struct.Struct("<f")
FLOAT32_MAX = 3.4028234663852886e38


def shortest_float32(value: float) -> float:
    """The number with the fewest significant digits that is the same float32 as `value` (a float32
    widened to a double): the precision the meter sent, e.g. 221.964 for 221.96400451660156. A value
    that a ratio took beyond the float32 range is left as it is."""
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        return value
    exact = _FLOAT32.pack(value)
    (value,) = _FLOAT32.unpack(exact)  # a scaled value: its float32 first, whose digits are searched
    for digits in (6, 7, 8):
        candidate = float(f"{value:.{digits}g}")
        if _FLOAT32.pack(candidate) == exact:
            return candidate
    return float(f"{value:.9g}")


def tidy(value: float) -> float:
    """A scaled integer without the noise of binary multiplication (15 significant digits are exact
    for any meter's counter)."""
    return float(f"{value:.15g}")


@dataclass(frozen=True)
class _Block:
    """How to decode one request's answer."""

    words: Callable[[list[int]], Any] | None
    """Reorders the answer's words (None: as they come)."""
    pack: Callable[..., bytes]
    unpack: Callable[[bytes], tuple[Any, ...]]
    items: tuple[Located, ...]
    """In the order `unpack` returns them; byte-swapped ones come last, each with its own format."""
    swapped: tuple[tuple[Located, struct.Struct, int], ...]
    """Byte-swapped items: their format and byte offset in the reordered answer."""


def _block(request: Request) -> _Block:
    order = list(range(request.count))
    fmt, at, items, swapped = [">"], 0, [], []
    for item in sorted(request.registers, key=lambda r: r.address):
        offset = item.address - request.address
        if item.word_order in REVERSED:
            order[offset : offset + item.count] = order[offset : offset + item.count][::-1]
        if item.word_order in BYTE_SWAPPED:
            swapped.append((item, struct.Struct("<" + CODES[item.type]), 2 * offset))
            continue
        fmt.append("x" * 2 * (offset - at) + CODES[item.type])
        at = offset + item.count
        items.append(item)
    fmt.append("x" * 2 * (request.count - at))
    words = None if order == sorted(order) else (itemgetter(*order) if len(order) > 1 else None)
    return _Block(
        words=words,
        pack=struct.Struct(f">{request.count}H").pack,
        unpack=struct.Struct("".join(fmt)).unpack,
        items=(*items, *(item for item, _, _ in swapped)),
        swapped=tuple(swapped),
    )


@dataclass(frozen=True)
class _Out:
    """One register's way from its raw number to its value."""

    quantity: str
    register: Register
    sentinels: frozenset[float]
    bits: int | None
    tidy: Callable[[float], float] | None


class PlanDecoder:
    """Decodes the answers to `requests` (a plan of `profile`) into quantity values, like
    :meth:`Profile.decode` does from a dict of words, with the config's `ratios`."""

    def __init__(self, profile: Profile, requests: Sequence[Request], ratios: Ratios | None = None) -> None:
        self.profile = profile
        self.ratios = ratios
        self._blocks = [_block(r) for r in requests]
        self._outs = {
            reg.quantity: _Out(
                reg.quantity,
                reg,
                frozenset(reg.nan_sentinels),
                INTEGER_BITS.get(reg.type) if reg.nan_sentinels else None,
                shortest_float32
                if reg.type is DataType.FLOAT32
                else tidy
                if reg.type in INTEGER_BITS
                else None,
            )
            for reg in profile.registers
        }
        self._fixed = None if profile.parameters else profile.factors({}, ratios)
        """The multipliers when no parameter feeds them: the same every poll."""

    def decode(self, answers: Sequence[list[int] | None]) -> dict[str, float | None]:
        """Every quantity whose words (and parameters) were read, from the answers in plan order (None:
        that request failed); None: not available (a sentinel, a non-finite number)."""
        raw: dict[str, float] = {}
        params: dict[str, float | None] = {}
        for block, answer in zip(self._blocks, answers, strict=True):
            if answer is None:
                continue
            data = block.pack(*(answer if block.words is None else block.words(answer)))
            numbers = list(block.unpack(data))
            numbers.extend(fmt.unpack_from(data, offset)[0] for _, fmt, offset in block.swapped)
            for item, number in zip(block.items, numbers, strict=True):
                if isinstance(item, Parameter):
                    params[item.name] = float(number) * item.scale if math.isfinite(number) else None
                else:
                    assert isinstance(item, Register)
                    raw[item.quantity] = number
        factors = self._fixed if self._fixed is not None else self.profile.factors(params, self.ratios)
        out: dict[str, float | None] = {}
        for quantity, number in raw.items():
            if quantity not in factors:
                continue
            factor = factors[quantity]
            o = self._outs[quantity]
            if factor is None or not math.isfinite(number) or self._sentinel(o, number):
                out[quantity] = None
                continue
            reg = o.register
            value = number * reg.scale * factor + reg.offset
            out[quantity] = value if o.tidy is None else o.tidy(value)
        return out

    @staticmethod
    def _sentinel(out: _Out, number: float) -> bool:
        if not out.sentinels:
            return False
        return number in out.sentinels or (
            out.bits is not None and int(number) % (1 << out.bits) in out.sentinels
        )
