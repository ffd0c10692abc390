"""Per-unit faults the simulator injects, so an agent can be tried against the meters that spoil real buses.

Faults split in two: what a meter *says* (``exception``, ``garbage``) is decided when its answer is built;
how the answer *reaches the wire* (``dead``, ``slow``, ``crc``) is decided when it is framed and sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kilowatch.profiles import MAX_UNIT

EXCEPTION_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 10, 11})
"""The exception codes the Modbus application protocol defines."""


class FaultKind(StrEnum):
    DEAD = "dead"
    """Never answers, as a meter that lost power or has the wrong unit id set."""
    SLOW = "slow"
    """Answers after `seconds`, as a meter busy measuring or a long line with a slow converter."""
    CRC = "crc"
    """Answers with a corrupted CRC, as noise on an unterminated RS-485 line does (RTU framing only)."""
    EXCEPTION = "exception"
    """Answers every read with Modbus exception `code`."""
    GARBAGE = "garbage"
    """Answers reads with random words (NaN and absurd floats among them), as a meter with a broken firmware."""


_ARGUMENT = {FaultKind.SLOW: "seconds", FaultKind.EXCEPTION: "code"}
"""The kinds that take an argument, and its name."""


class Fault(BaseModel):
    """One way a unit misbehaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind = Field(description="What goes wrong.")
    seconds: float | None = Field(default=None, gt=0, description="How late a `slow` unit answers.")
    code: int | None = Field(default=None, description="The exception code an `exception` unit answers.")
    share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of answers a `crc` fault corrupts (a noisy line spoils some).",
    )

    @model_validator(mode="after")
    def _argument_fits_kind(self) -> Self:
        wanted = _ARGUMENT.get(self.kind)
        for name in ("seconds", "code"):
            given = getattr(self, name) is not None
            if given and name != wanted:
                raise ValueError(f"fault {self.kind.value!r} takes no {name}")
            if not given and name == wanted:
                raise ValueError(f"fault {self.kind.value!r} needs {name}")
        if self.share != 1.0 and self.kind is not FaultKind.CRC:
            raise ValueError(f"fault {self.kind.value!r} takes no share")
        if self.code is not None and self.code not in EXCEPTION_CODES:
            raise ValueError(f"exception code {self.code} is not one of {sorted(EXCEPTION_CODES)}")
        return self


@dataclass(frozen=True)
class Scheduled:
    """A fault active in [`start`, `end`) of simulated time (an open bound: from or until forever), so a
    scenario can make a meter misbehave only inside its labelled window."""

    fault: Fault
    start: datetime | None = None
    end: datetime | None = None

    def active(self, t: datetime) -> bool:
        return (self.start is None or self.start <= t) and (self.end is None or t < self.end)


def parse_fault(text: str) -> tuple[int, Fault]:
    """``UNIT:KIND[=ARG]`` (``3:dead``, ``4:slow=0.8``, ``5:exception=4``) -> (unit, fault); ValueError if bad."""
    unit_text, colon, spec = text.partition(":")
    kind_text, equals, argument = spec.strip().partition("=")
    if not colon or not unit_text.strip().isdigit() or not 1 <= int(unit_text) <= MAX_UNIT:
        raise ValueError(f"{text!r} is not UNIT:KIND[=ARG] with a unit id 1-{MAX_UNIT}")
    try:
        kind = FaultKind(kind_text)
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"{text!r}: unknown fault {kind_text!r}; the faults are {kinds}") from None
    name = _ARGUMENT.get(kind)
    if name is None and equals:
        raise ValueError(f"{text!r}: fault {kind.value!r} takes no argument")
    try:
        fault = Fault.model_validate({"kind": kind} | ({name: argument or None} if name else {}))
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        raise ValueError(
            f"{text!r}: {where + ': ' if where else ''}{problem['msg'].removeprefix('Value error, ')}"
        ) from None
    return int(unit_text), fault
