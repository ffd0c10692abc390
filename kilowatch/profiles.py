"""Device profiles: one YAML register map per meter model, validated by the schema below.

A profile says which registers a model has, how to decode each into a canonical quantity, how to talk to
it (connection defaults, quirks) and carries test vectors (raw words -> expected values) that CI decodes.
The agent reads meters with it and the simulator serves meters from it, so both stay in step.
"""

from __future__ import annotations

import math
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kilowatch import yamlconfig
from kilowatch.quantities import QUANTITIES
from kilowatch.registers import DataType, WordOrder, decode, register_count

PROFILE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
MAX_UNIT = 247
"""Highest Modbus unit (slave) id a device may have; 0 is broadcast and 248-255 are reserved."""


class Table(StrEnum):
    """The Modbus register table, which decides the read function code."""

    INPUT = "input"
    HOLDING = "holding"

    @property
    def function_code(self) -> int:
        return 4 if self is Table.INPUT else 3

    @property
    def modicon_base(self) -> int:
        """First address of this table in the 5-digit numbering manuals print (30001, 40001)."""
        return 30001 if self is Table.INPUT else 40001


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Connection(_Strict):
    """Serial and protocol defaults as the manufacturer ships the meter; a config may override them."""

    unit: int = Field(1, ge=1, le=MAX_UNIT, description="Default Modbus unit (slave) id")
    baud: int = Field(9600, gt=0, description="Default baud rate on RS-485")
    parity: Literal["N", "E", "O"] = Field("N", description="Default parity")
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(1.0, gt=0, le=30, description="Response timeout in seconds")


class ForbiddenRange(_Strict):
    """Registers a meter must never be asked for (some firmwares hang or reset when they are read)."""

    table: Table = Field(Table.INPUT, description="Register table the range is in")
    start: int = Field(ge=0, le=0xFFFF, description="First forbidden wire address")
    end: int = Field(ge=0, le=0xFFFF, description="Last forbidden wire address (inclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"end {self.end:#06x} is before start {self.start:#06x}")
        return self

    def overlaps(self, table: Table, address: int, count: int) -> bool:
        """Whether reading `count` registers of `table` from `address` touches this range."""
        return table is self.table and address <= self.end and self.start < address + count


class Quirks(_Strict):
    """How this model deviates from a textbook Modbus slave."""

    max_registers_per_request: int = Field(
        125, ge=1, le=125, description="Largest register count the meter answers in one request"
    )
    single_register_reads: bool = Field(False, description="The meter only answers one value per request")
    fill_gaps: bool = Field(
        False,
        description="The meter answers for unmapped registers, so one request may span a gap between "
        "mapped ones when that is quicker than two (most meters answer illegal data address instead)",
    )
    forbidden_ranges: list[ForbiddenRange] = Field(
        default_factory=list, description="Registers no request may touch, even to fill a gap"
    )


class Register(_Strict):
    """One value in the register map."""

    quantity: str = Field(description="Canonical quantity name this register maps onto")
    table: Table = Table.INPUT
    address: int = Field(ge=0, le=0xFFFF, description="0-based address on the wire (the PDU address)")
    manual_address: int | None = Field(
        None, description="The address as the manual prints it (e.g. 30001), checked against table+address"
    )
    type: DataType = DataType.FLOAT32
    word_order: WordOrder = WordOrder.ABCD
    length: int | None = Field(None, ge=1, le=64, description="Registers, for strings only")
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = 0.0
    nan_sentinels: list[float] = Field(
        default_factory=list, description="Raw values the meter uses to mean 'not available'"
    )

    @field_validator("quantity")
    @classmethod
    def _known_quantity(cls, name: str) -> str:
        if name not in QUANTITIES:
            raise ValueError(f"unknown quantity {name!r}; see kilowatch.quantities for the vocabulary")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type is DataType.STRING:
            raise ValueError("a string register cannot map onto a numeric quantity")
        if self.length is not None:
            raise ValueError("length is only for string registers")
        if self.scale == 0:
            raise ValueError("scale 0 would turn every reading into the offset")
        if self.manual_address is not None and self.manual_address >= 10001:
            expected = self.table.modicon_base + self.address
            if self.manual_address != expected:
                raise ValueError(
                    f"manual_address {self.manual_address} does not match {self.table.value} "
                    f"register {self.address:#06x} (expected {expected})"
                )
        return self

    @property
    def count(self) -> int:
        """Registers this value occupies on the wire."""
        return register_count(self.type, self.length)

    def decode(self, words: list[int]) -> float | None:
        """Decode wire words into the quantity's unit; None for a NaN sentinel or a non-finite number."""
        raw = decode(words, self.type, self.word_order)
        assert not isinstance(raw, str)
        if raw in self.nan_sentinels or not math.isfinite(raw):
            return None
        return float(raw) * self.scale + self.offset


class TestVector(_Strict):
    """Raw register words as read from a real meter (or the manual) and what they must decode to."""

    description: str = ""
    words: dict[int, list[Annotated[int, Field(ge=0, le=0xFFFF)]]] = Field(
        description="Wire address -> the words starting there"
    )
    expect: dict[str, float | None] = Field(description="Quantity -> expected value (None: not available)")
    tolerance: float = Field(1e-6, ge=0, description="Relative tolerance when comparing")


class FingerprintCheck(_Strict):
    """One register read that tells this model apart: it must answer, and its value must lie in a range."""

    quantity: str = Field(description="A quantity mapped in this profile; its register is read and decoded")
    min: float = Field(description="Lowest value this model can show (inclusive)")
    max: float = Field(description="Highest value this model can show (inclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max < self.min:
            raise ValueError(f"max {self.max:g} is below min {self.min:g}")
        return self

    def accepts(self, value: float | None) -> bool:
        """Whether a decoded value (None: a NaN sentinel or not finite) is what this model would show."""
        return value is not None and self.min <= value <= self.max


class Profile(_Strict):
    """The register map of one meter model (and firmware variant)."""

    id: str = Field(pattern=PROFILE_ID_PATTERN, description="Profile id used in configs, e.g. eastron-sdm630")
    manufacturer: str
    model: str
    aliases: list[str] = Field(default_factory=list, description="Rebadged or equivalent model names")
    source: str = Field(min_length=10, description="The document the map was built from, with its version")
    connection: Connection = Connection()
    quirks: Quirks = Quirks()
    registers: list[Register] = Field(min_length=1)
    test_vectors: list[TestVector] = Field(default_factory=list)
    fingerprint: list[FingerprintCheck] = Field(
        default_factory=list,
        description="Checks that identify this model on a bus scan: each register must answer with a value "
        "in range. Choose values another model's map would answer outside of (or not at all); empty: the "
        "model is never identified by a scan",
    )

    @model_validator(mode="after")
    def _no_overlaps(self) -> Self:
        seen_quantities: set[str] = set()
        used: dict[tuple[Table, int], str] = {}
        for reg in self.registers:
            if reg.quantity in seen_quantities:
                raise ValueError(f"quantity {reg.quantity!r} is mapped twice")
            seen_quantities.add(reg.quantity)
            for addr in range(reg.address, reg.address + reg.count):
                other = used.get((reg.table, addr))
                if other:
                    raise ValueError(
                        f"{reg.quantity!r} overlaps {other!r} at {reg.table.value} register {addr:#06x}"
                    )
                used[(reg.table, addr)] = reg.quantity
            if reg.count > self.quirks.max_registers_per_request:
                raise ValueError(f"{reg.quantity!r} needs more registers than one request may read")
            for forbidden in self.quirks.forbidden_ranges:
                if forbidden.overlaps(reg.table, reg.address, reg.count):
                    raise ValueError(
                        f"{reg.quantity!r} lies in the forbidden {reg.table.value} range "
                        f"{forbidden.start:#06x}-{forbidden.end:#06x}"
                    )
        for i, check in enumerate(self.fingerprint):
            if check.quantity not in seen_quantities:
                raise ValueError(
                    f"fingerprint[{i}] reads {check.quantity!r}, which this profile does not map"
                )
        for i, vector in enumerate(self.test_vectors):
            unknown = set(vector.expect) - seen_quantities
            if unknown:
                raise ValueError(f"test_vectors[{i}] expects unmapped quantities {sorted(unknown)}")
        return self

    def register(self, quantity: str) -> Register:
        for reg in self.registers:
            if reg.quantity == quantity:
                return reg
        raise KeyError(quantity)

    def decode_words(
        self, words: dict[int, list[int]], table: Table = Table.INPUT
    ) -> dict[str, float | None]:
        """Decode every register found in `words` (wire address -> consecutive words starting there)."""
        flat: dict[int, int] = {}
        for start, run in words.items():
            for i, word in enumerate(run):
                flat[start + i] = word
        out: dict[str, float | None] = {}
        for reg in self.registers:
            if reg.table is not table:
                continue
            span = [flat.get(a) for a in range(reg.address, reg.address + reg.count)]
            if all(w is not None for w in span):
                out[reg.quantity] = reg.decode([w for w in span if w is not None])
        return out


def builtin_dir() -> Path:
    """Where the shipped profiles are: inside the wheel, or the repository's device_profiles/."""
    packaged = Path(str(resources.files("kilowatch"))) / "device_profiles"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "device_profiles"


def load_file(path: Path) -> Profile:
    """Load and validate one profile file; ConfigError names file, line and key on failure."""
    profile = yamlconfig.load(Profile, path)
    if profile.id != path.stem:
        raise yamlconfig.ConfigError(path, [f"{path.name}:1 id: {profile.id!r} must match the file name"])
    return profile


def load_builtin(profile_id: str) -> Profile:
    """Load a shipped profile by id or alias (case-insensitive); KeyError lists the shipped ids."""
    directory = builtin_dir()
    path = directory / f"{profile_id}.yaml"
    if path.is_file():
        return _load_cached(path)
    for candidate in sorted(directory.glob("*.yaml")):
        profile = _load_cached(candidate)
        if profile_id.lower() in (alias.lower() for alias in profile.aliases):
            return profile
    raise KeyError(f"no device profile {profile_id!r}; shipped profiles: {', '.join(builtin_ids())}")


@cache
def _load_cached(path: Path) -> Profile:
    """Profiles are immutable, so each file is parsed once per process."""
    return load_file(path)


def builtin_ids() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def vector_failures(profile: Profile) -> list[str]:
    """Decode every test vector of `profile`; one message per value that differs from what it expects."""
    failures = []
    for i, vector in enumerate(profile.test_vectors):
        got = profile.decode_words(vector.words)
        for quantity, expected in vector.expect.items():
            actual = got.get(quantity, "not decoded")
            if expected is None or actual is None or isinstance(actual, str):
                ok = actual is expected
            else:
                ok = math.isclose(actual, expected, rel_tol=vector.tolerance, abs_tol=1e-9)
            if not ok:
                failures.append(
                    f"{profile.id}: test_vectors[{i}] {quantity}: expected {expected}, got {actual}"
                )
    return failures
