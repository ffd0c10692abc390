"""Device profiles: one YAML register map per meter model, validated by the schema below.

A profile says which registers a model has, how to decode each into a canonical quantity, how to talk to
it (connection defaults, quirks) and carries test vectors (raw words -> expected values) that CI decodes.
The agent reads meters with it and the simulator serves meters from it, so both stay in step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from kilowatch import yamlconfig
from kilowatch.quantities import QUANTITIES
from kilowatch.registers import (
    INTEGER_BITS,
    SIGNED,
    DataType,
    WordOrder,
    decode,
    encode,
    register_count,
    representable,
)

PROFILE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
PARAMETER_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
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
    # defer_build: built on first use (a profile's test vectors and fingerprints are not used by the agent run)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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


class Located(_Strict):
    """A number at a place in the register map: what the planner reads and the simulator serves."""

    table: Table = Field(Table.INPUT, description="input (function code 4) or holding (function code 3)")
    address: int = Field(ge=0, le=0xFFFF, description="0-based address on the wire (the PDU address)")
    manual_address: int | None = Field(
        None, description="The address as the manual prints it (e.g. 30001), checked against table+address"
    )
    type: DataType = Field(
        DataType.FLOAT32, description="int16, uint16, int32, uint32, int64, uint64, float32 or float64"
    )
    word_order: WordOrder = Field(
        WordOrder.ABCD,
        description="For the big-endian bytes A B C D: ABCD high word first, CDAB low word first, BADC "
        "and DCBA the same with the bytes of each word swapped",
    )
    scale: float = Field(1.0, description="value = raw * scale")

    @model_validator(mode="after")
    def _located(self) -> Self:
        if self.type is DataType.STRING:
            raise ValueError("a string register cannot hold a number")
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
        return register_count(self.type)

    @property
    def label(self) -> str:
        """What this value is called in messages."""
        raise NotImplementedError

    def stored(self, value: float, factor: float = 1.0, offset: float = 0.0) -> float | int:
        """The number a meter stores for `value`: (value - offset) / (scale * factor), fitted to the type.

        Unsigned integers wrap around as real counters roll over; signed integers saturate.
        """
        raw = (value - offset) / (self.scale * factor)
        bits = INTEGER_BITS.get(self.type)
        if bits is None:
            return raw
        whole = round(raw)
        if self.type in SIGNED:
            limit = 1 << (bits - 1)
            return min(limit - 1, max(-limit, whole))
        return whole % (1 << bits)


class Parameter(Located):
    """A register the measurements depend on or a scan recognises the model by: a scale-factor exponent,
    a CT or VT ratio, a model code. It is not published; it is read in the same poll as the registers."""

    name: str = Field(pattern=PARAMETER_NAME_PATTERN, description="Name registers and checks refer to")
    scale: float = Field(1.0, description="value = raw * scale (e.g. a VT ratio stored in tenths: 0.1)")
    value: float = Field(
        0.0,
        description="What a meter of this model typically holds here (its model code, its scale-factor "
        "exponent, 1 for a ratio); the simulator serves it",
    )

    @property
    def label(self) -> str:
        return self.name

    def decode(self, words: list[int]) -> float | None:
        raw = decode(words, self.type, self.word_order)
        assert not isinstance(raw, str)
        return float(raw) * self.scale if math.isfinite(raw) else None


class Register(Located):
    """One value in the register map."""

    quantity: str = Field(description="Canonical quantity name this register maps onto")
    scale: float = Field(
        1.0,
        description="value = raw * scale * 10^scale_factor * ratios + offset; e.g. 0.001 for a counter "
        "in Wh mapped onto a kWh quantity, 0.1 for volts in tenths",
    )
    offset: float = 0.0
    scale_factor: str | None = Field(
        None,
        description="Name of a parameter whose value n multiplies this register by 10^n (SunSpec-style "
        "scale-factor registers); it is read in the same poll",
    )
    ct_scaled: bool = Field(
        False,
        description="The meter reports this value on the CT's secondary side: it is multiplied by the CT "
        "ratio (from the profile's ratio register, else the meter's ct_ratio in the agent config)",
    )
    vt_scaled: bool = Field(
        False,
        description="Likewise for the VT ratio; power and energy behind both transformers set both flags",
    )
    nan_sentinels: list[float] = Field(
        default_factory=list,
        description="Raw values the meter uses to mean 'not available'; an integer register matches "
        "either its signed or unsigned reading, so 0x8000 and -32768 both work for an int16",
    )

    @field_validator("quantity")
    @classmethod
    def _known_quantity(cls, name: str) -> str:
        if name not in QUANTITIES:
            raise ValueError(f"unknown quantity {name!r}; see kilowatch.quantities for the vocabulary")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale 0 would turn every reading into the offset")
        for sentinel in self.nan_sentinels:
            if not representable(sentinel, self.type):
                raise ValueError(f"nan_sentinels value {sentinel:g} can never be read from a {self.type}")
        return self

    @property
    def label(self) -> str:
        return self.quantity

    def stored(self, value: float, factor: float = 1.0, offset: float | None = None) -> float | int:
        return super().stored(value, factor, self.offset if offset is None else offset)

    def raw(self, words: list[int]) -> float | None:
        """The number in the wire words, None for a sentinel or a non-finite number."""
        raw = decode(words, self.type, self.word_order)
        assert not isinstance(raw, str)
        if not math.isfinite(raw) or raw in self.nan_sentinels:
            return None
        bits = INTEGER_BITS.get(self.type)
        if bits is not None and int(raw) % (1 << bits) in self.nan_sentinels:
            return None
        return float(raw)

    def decode(self, words: list[int], factor: float = 1.0) -> float | None:
        """Decode wire words into the quantity's unit; None for a sentinel or a non-finite number.

        `factor` is what the profile's parameters contribute: 10^scale_factor times the CT/VT ratios.
        """
        raw = self.raw(words)
        return None if raw is None else raw * self.scale * factor + self.offset


class Ratios(_Strict):
    """Transformer ratios (primary / secondary, e.g. 100/5 A gives 20) for ct_scaled and vt_scaled registers."""

    ct: float = Field(1.0, gt=0, description="Current transformer ratio")
    vt: float = Field(1.0, gt=0, description="Voltage transformer ratio")


class RatioRegisters(_Strict):
    """Parameters in which the meter itself holds its transformer ratios (then no config may set them)."""

    ct: str | None = Field(None, description="Parameter holding the CT ratio")
    vt: str | None = Field(None, description="Parameter holding the VT ratio")


class TestVector(_Strict):
    """Raw register words as read from a real meter (or the manual) and what they must decode to."""

    description: str = ""
    table: Table | None = Field(
        None, description="Table the words are from; may be left out when every register is in one table"
    )
    words: dict[int, list[Annotated[int, Field(ge=0, le=0xFFFF)]]] = Field(
        description="Wire address -> the words starting there (parameters such as scale factors included)"
    )
    ratios: Ratios = Field(
        default_factory=Ratios, description="CT/VT ratios as an agent config would set them for this meter"
    )
    expect: dict[str, float | None] = Field(description="Quantity -> expected value (None: not available)")
    tolerance: float = Field(1e-6, ge=0, description="Relative tolerance when comparing")


class AddressRef(_Strict):
    """A run of registers by table and address."""

    table: Table = Table.INPUT
    address: int = Field(ge=0, le=0xFFFF)
    count: int = Field(1, ge=1, le=125)

    @property
    def end(self) -> int:
        """First address after the run."""
        return self.address + self.count


class FingerprintCheck(_Strict):
    """One read that tells this model apart. Exactly one of `quantity`, `parameter` or `refuses`:

    - `quantity` or `parameter`: the register must answer, and its decoded value must equal `equals`
      (an identification register's model code) or lie in `min`..`max` (a plausible measurement);
    - `refuses`: reading that address must be answered with a Modbus exception, which tells a model apart
      from a sibling whose map is the same except for registers this one lacks.
    """

    quantity: str | None = Field(None, description="A quantity mapped in this profile; its register is read")
    parameter: str | None = Field(
        None, description="A parameter of this profile (e.g. a model code register)"
    )
    refuses: AddressRef | None = Field(None, description="Registers this model answers with an exception")
    equals: float | list[float] | None = Field(
        None,
        description="The exact value this model holds (e.g. its model code), or a list of the values its "
        "variants hold (one must match)",
    )
    min: float | None = Field(None, description="Lowest value this model can show (inclusive)")
    max: float | None = Field(None, description="Highest value this model can show (inclusive)")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in ("quantity", "parameter", "refuses") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a check reads exactly one of quantity, parameter or refuses")
        if self.refuses is not None:
            if (self.equals, self.min, self.max) != (None, None, None):
                raise ValueError("a refuses check has no value to compare")
            return self
        if self.equals is not None:
            if self.min is not None or self.max is not None:
                raise ValueError("give either equals or min and max")
        elif self.min is None or self.max is None:
            raise ValueError("give equals, or both min and max")
        elif self.max < self.min:
            raise ValueError(f"max {self.max:g} is below min {self.min:g}")
        return self

    def accepts(self, value: float | None) -> bool:
        """Whether a decoded value (None: a NaN sentinel or not finite) is what this model would show."""
        if value is None:
            return False
        if self.equals is not None:
            allowed = self.equals if isinstance(self.equals, list) else [self.equals]
            return any(math.isclose(value, v, rel_tol=1e-9, abs_tol=1e-9) for v in allowed)
        assert self.min is not None
        assert self.max is not None
        return self.min <= value <= self.max


Words = Mapping[tuple[Table, int], int]
"""Every word read in one poll by table and wire address."""
REFUSED: Final = "refused"
Answer = list[int] | Literal["refused"] | None
"""What one read got: the words, a Modbus exception (REFUSED), or nothing (silence, a broken frame)."""


class Profile(_Strict):
    """The register map of one meter model (and firmware variant)."""

    id: str = Field(pattern=PROFILE_ID_PATTERN, description="Profile id used in configs, e.g. eastron-sdm630")
    manufacturer: str
    model: str
    aliases: list[str] = Field(default_factory=list, description="Rebadged or equivalent model names")
    source: str = Field(min_length=10, description="The document the map was built from, with its version")
    phases: Literal[1, 3] = Field(
        3, description="1: a single-phase meter, which maps no L2/L3 quantity; 3: a three-phase meter"
    )
    wiring: str = Field(
        "", description="Networks the meter supports as the manual names them, e.g. '3P4W, 3P3W, 1P2W'"
    )
    connection: Connection = Connection()
    quirks: Quirks = Quirks()
    parameters: list[Parameter] = Field(
        default_factory=list,
        description="Registers that are not published but that registers (scale_factor), ratio_registers "
        "or fingerprint checks name",
    )
    ratio_registers: RatioRegisters = Field(
        default_factory=RatioRegisters,
        description="Where the meter keeps its own CT/VT ratios; a ratio not named here comes from the "
        "agent config (default 1)",
    )
    registers: list[Register] = Field(min_length=1)
    test_vectors: list[TestVector] = Field(default_factory=list)
    fingerprint: list[FingerprintCheck] = Field(
        default_factory=list,
        description="Checks that identify this model on a bus scan, all of which must pass: a quantity or "
        "parameter in range or equal to a value, or an address that must be refused. Choose values another "
        "model's map would answer outside of (or not at all); empty: the model is never identified by a scan",
    )

    @model_validator(mode="after")
    def _no_overlaps(self) -> Self:
        """Cross-field rules, each error located at the key it is about so a check names file:line."""
        errors: list[InitErrorDetails] = []

        def problem(loc: tuple[str | int, ...], message: str) -> None:
            errors.append(InitErrorDetails(type=PydanticCustomError("profile", message), loc=loc, input=None))

        names: dict[str, int] = {}
        for i, param in enumerate(self.parameters):
            if param.name in names:
                problem(
                    ("parameters", i, "name"), f"{param.name!r} is already parameters[{names[param.name]}]"
                )
            names.setdefault(param.name, i)
        seen_quantities: set[str] = set()
        used: dict[tuple[Table, int], str] = {}
        located: list[tuple[tuple[str, int], Located]] = [
            (("parameters", i), p) for i, p in enumerate(self.parameters)
        ]
        located += [(("registers", i), r) for i, r in enumerate(self.registers)]
        for where, item in located:
            if isinstance(item, Register):
                if item.quantity in seen_quantities:
                    problem((*where, "quantity"), f"quantity {item.quantity!r} is mapped twice")
                seen_quantities.add(item.quantity)
                if self.phases == 1 and any(p in item.quantity for p in ("l2", "l3")):
                    problem(
                        (*where, "quantity"), f"a single-phase meter (phases: 1) has no {item.quantity!r}"
                    )
                if item.scale_factor is not None and item.scale_factor not in names:
                    problem(
                        (*where, "scale_factor"),
                        f"{item.quantity!r} names an unknown scale_factor {item.scale_factor!r}",
                    )
            for addr in range(item.address, item.address + item.count):
                other = used.get((item.table, addr))
                if other:
                    problem(
                        (*where, "address"),
                        f"{item.label!r} overlaps {other!r} at {item.table.value} register {addr:#06x}",
                    )
                    break
                used[(item.table, addr)] = item.label
            if item.count > self.quirks.max_registers_per_request:
                problem((*where, "type"), f"{item.label!r} needs more registers than one request may read")
            for forbidden in self.quirks.forbidden_ranges:
                if forbidden.overlaps(item.table, item.address, item.count):
                    problem(
                        (*where, "address"),
                        f"{item.label!r} lies in the forbidden {item.table.value} range "
                        f"{forbidden.start:#06x}-{forbidden.end:#06x}",
                    )
        for kind in ("ct", "vt"):
            name = getattr(self.ratio_registers, kind)
            if name is not None and name not in names:
                problem(("ratio_registers", kind), f"names an unknown parameter {name!r}")
        for i, check in enumerate(self.fingerprint):
            if check.quantity is not None and check.quantity not in seen_quantities:
                problem(
                    ("fingerprint", i, "quantity"),
                    f"reads {check.quantity!r}, which this profile does not map",
                )
            if check.parameter is not None and check.parameter not in names:
                problem(
                    ("fingerprint", i, "parameter"),
                    f"reads parameter {check.parameter!r}, which is not defined",
                )
            if check.refuses is not None:
                ref = check.refuses
                mapped = [used[(ref.table, a)] for a in range(ref.address, ref.end) if (ref.table, a) in used]
                if mapped:
                    problem(
                        ("fingerprint", i, "refuses"),
                        f"expects {ref.table.value} register {ref.address:#06x} to be refused, "
                        f"but the profile maps {mapped[0]!r} there",
                    )
        tables = {reg.table for _, reg in located}
        for i, vector in enumerate(self.test_vectors):
            unknown = set(vector.expect) - seen_quantities
            if unknown:
                problem(("test_vectors", i, "expect"), f"expects unmapped quantities {sorted(unknown)}")
            if vector.table is None and len(tables) > 1:
                problem(
                    ("test_vectors", i),
                    "needs a table: the profile uses both input and holding",
                )
        if errors:
            raise ValidationError.from_exception_data("Profile", errors)
        return self

    def located(self) -> list[Located]:
        """Every parameter and register: all that a poll reads."""
        return [*self.parameters, *self.registers]

    def register(self, quantity: str) -> Register:
        for reg in self.registers:
            if reg.quantity == quantity:
                return reg
        raise KeyError(quantity)

    def parameter(self, name: str) -> Parameter:
        for param in self.parameters:
            if param.name == name:
                return param
        raise KeyError(name)

    def check_read(self, check: FingerprintCheck) -> tuple[Table, int, int]:
        """The read a fingerprint check makes: table, address and register count."""
        if check.refuses is not None:
            return check.refuses.table, check.refuses.address, check.refuses.count
        target: Located
        if check.quantity is not None:
            target = self.register(check.quantity)
        else:
            assert check.parameter is not None
            target = self.parameter(check.parameter)
        return target.table, target.address, target.count

    def passes(self, check: FingerprintCheck, answer: Answer) -> bool:
        """Whether a fingerprint check passes on what its read got.

        A `refuses` check passes on an exception alone (silence proves nothing); a value check when the
        words decode to a value it accepts. A quantity that needs a scale factor or a ratio held by the
        meter cannot be decoded from its own words and never passes: check the parameter instead.
        """
        if check.refuses is not None:
            return answer == REFUSED
        if not isinstance(answer, list):
            return False
        if check.parameter is not None:
            return check.accepts(self.parameter(check.parameter).decode(answer))
        table, address, _ = self.check_read(check)
        words = {(table, address + i): w for i, w in enumerate(answer)}
        return check.accepts(self.decode(words).get(check.quantity or ""))

    def recognises(self, words: Words) -> bool:
        """Whether this profile's fingerprint identifies a meter that holds `words` and refuses every read
        of another address (as most meters do, and as the simulator does)."""
        return bool(self.fingerprint) and self.failing_check(words) is None

    def failing_check(self, words: Words) -> int | None:
        """Index of the first fingerprint check that fails on a meter holding `words` (None: all pass)."""
        for i, check in enumerate(self.fingerprint):
            if not self.passes(check, held(words, *self.check_read(check))):
                return i
        return None

    def factors(
        self, params: Mapping[str, float | None], ratios: Ratios | None = None
    ) -> dict[str, float | None]:
        """What each register's raw value is multiplied by besides its scale: 10^scale_factor and the CT/VT
        ratios, from the parameters' values (the meter's) and `ratios` (the config's, for those the meter
        does not hold). Missing: a parameter it needs was not read; None: it holds no number."""
        config = ratios or Ratios()
        held = self.ratio_registers
        ct = config.ct if held.ct is None else params.get(held.ct)
        vt = config.vt if held.vt is None else params.get(held.vt)
        out: dict[str, float | None] = {}
        for reg in self.registers:
            factor: float | None = 1.0
            if reg.scale_factor is not None:
                if reg.scale_factor not in params:
                    continue
                exponent = params[reg.scale_factor]
                factor = None if exponent is None else 10.0**exponent
            for scaled, ratio in ((reg.ct_scaled, ct), (reg.vt_scaled, vt)):
                if scaled:
                    factor = None if factor is None or ratio is None else factor * ratio
            out[reg.quantity] = factor
        return out

    def decode(self, words: Words, ratios: Ratios | None = None) -> dict[str, float | None]:
        """Every quantity whose words (and parameters) were read; None: not available.

        `ratios` are the config's CT/VT ratios, used for those the meter does not hold itself.
        """
        params: dict[str, float | None] = {}
        for param in self.parameters:
            span = _span(words, param)
            if span is not None:
                params[param.name] = param.decode(span)
        factors = self.factors(params, ratios)
        out: dict[str, float | None] = {}
        for reg in self.registers:
            span = _span(words, reg)
            if span is None or reg.quantity not in factors:
                continue
            factor = factors[reg.quantity]
            out[reg.quantity] = None if factor is None else reg.decode(span, factor)
        return out

    def encode(
        self, values: Mapping[str, float], ratios: Ratios | None = None
    ) -> dict[tuple[Table, int], int]:
        """The words a meter of this model holds while it shows `values` (one per register), each parameter
        holding its `value`: the inverse of :meth:`decode`."""
        factors = self.factors({p.name: p.value for p in self.parameters}, ratios)
        raws: list[tuple[Located, float | int]] = [(p, p.stored(p.value)) for p in self.parameters]
        raws += [(r, r.stored(values[r.quantity], factors[r.quantity] or 1.0)) for r in self.registers]
        return {
            (item.table, item.address + i): word
            for item, raw in raws
            for i, word in enumerate(encode(raw, item.type, item.word_order))
        }

    def decode_words(
        self, words: dict[int, list[int]], table: Table | None = None, ratios: Ratios | None = None
    ) -> dict[str, float | None]:
        """Decode runs of words (wire address -> consecutive words starting there) of one table; the
        table may be left out when the profile uses only one."""
        if table is None:
            tables = {item.table for item in self.located()}
            table = tables.pop() if len(tables) == 1 else Table.INPUT
        flat: dict[tuple[Table, int], int] = {}
        for start, run in words.items():
            for i, word in enumerate(run):
                flat[(table, start + i)] = word
        return self.decode(flat, ratios)


def held(words: Words, table: Table, address: int, count: int) -> Answer:
    """What a meter holding exactly `words` answers to a read: the words, or REFUSED."""
    span = [words.get((table, a)) for a in range(address, address + count)]
    return REFUSED if None in span else [w for w in span if w is not None]


def _span(words: Words, item: Located) -> list[int] | None:
    """The words of `item`, if all of them were read."""
    span = [words.get((item.table, a)) for a in range(item.address, item.address + item.count)]
    return [w for w in span if w is not None] if all(w is not None for w in span) else None


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


class VectorFailure(BaseModel):
    """A value a test vector expects and the profile decodes otherwise, with a hint at the likely cause."""

    index: int
    quantity: str
    expected: float | None
    actual: float | str | None
    hint: str

    def message(self, profile_id: str) -> str:
        return (
            f"{profile_id}: test_vectors[{self.index}] {self.quantity}: expected {self.expected}, "
            f"got {self.actual}" + (f" ({self.hint})" if self.hint else "")
        )


def vector_failures(profile: Profile) -> list[str]:
    """Decode every test vector of `profile`; one message per value that differs from what it expects."""
    return [failure.message(profile.id) for failure in explain_vectors(profile)]


def explain_vectors(profile: Profile) -> list[VectorFailure]:
    """Every value a test vector expects that `profile` decodes otherwise, each with its likely cause."""
    failures = []
    for i, vector in enumerate(profile.test_vectors):
        got = profile.decode_words(vector.words, vector.table, vector.ratios)
        for quantity, expected in vector.expect.items():
            actual = got.get(quantity, "not decoded")
            if expected is None or actual is None or isinstance(actual, str):
                ok = actual is expected
            else:
                ok = math.isclose(actual, expected, rel_tol=vector.tolerance, abs_tol=1e-9)
            if not ok:
                hint = _vector_hint(profile, vector, profile.register(quantity), expected, actual)
                failures.append(
                    VectorFailure(index=i, quantity=quantity, expected=expected, actual=actual, hint=hint)
                )
    return failures


def _vector_hint(
    profile: Profile, vector: TestVector, reg: Register, expected: float | None, actual: float | str | None
) -> str:
    """Why a vector's value came out wrong, as far as the words tell."""
    tables = {item.table for item in profile.located()}
    table = vector.table or (tables.pop() if len(tables) == 1 else Table.INPUT)
    flat = {start + i: w for start, run in vector.words.items() for i, w in enumerate(run)}
    if table is not reg.table:
        return (
            f"the register is in the {reg.table.value} table, the vector's words in the {table.value} table"
        )
    missing = [a for a in range(reg.address, reg.address + reg.count) if a not in flat]
    if missing:
        return (
            f"the words do not cover {', '.join(f'{a:#06x}' for a in missing)}: the register is a "
            f"{reg.type.value} in {reg.count} registers from {reg.address:#06x}"
        )
    needed = [reg.scale_factor] if reg.scale_factor else []
    needed += [
        n
        for flag, n in (
            (reg.ct_scaled, profile.ratio_registers.ct),
            (reg.vt_scaled, profile.ratio_registers.vt),
        )
        if flag and n
    ]
    for name in needed:
        param = profile.parameter(name)
        if any(a not in flat for a in range(param.address, param.address + param.count)):
            return f"the words lack parameter {name!r} at {param.address:#06x}, which this register needs"
    if expected is None:
        return "add the raw value to nan_sentinels if the meter means 'not available' by it"
    if not isinstance(actual, float):
        return "the words hold a sentinel or NaN" if actual is None else ""
    words = [flat[a] for a in range(reg.address, reg.address + reg.count)]
    params = {
        p.name: p.decode([flat[a] for a in range(p.address, p.address + p.count)])
        for p in profile.parameters
        if all(a in flat for a in range(p.address, p.address + p.count))
    }
    factor = profile.factors(params, vector.ratios).get(reg.quantity) or 1.0
    for data_type in DataType:
        if data_type is DataType.STRING or register_count(data_type) != reg.count:
            continue
        for order in WordOrder:
            if (data_type, order) == (reg.type, reg.word_order):
                continue
            raw = decode(words, data_type, order)
            assert not isinstance(raw, str)
            if math.isfinite(raw) and math.isclose(
                float(raw) * reg.scale * factor + reg.offset, expected, rel_tol=max(vector.tolerance, 1e-6)
            ):
                return f"read as {data_type.value} {order.value} the words give {expected}: check type and word_order"
    if actual and expected:
        exponent = math.log10(abs(expected / actual))
        if abs(exponent - round(exponent)) < 1e-6 and round(exponent) != 0:
            return f"off by a factor of 10^{round(exponent)}: check scale (or the scale factor)"
    return ""
