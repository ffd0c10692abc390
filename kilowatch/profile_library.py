"""Tools over the whole profile library: checking it (vectors and fingerprint clashes, each located at its
file, line and key), scaffolding a profile from a manual's register table, and the meters page of the docs.

Pure functions over profiles and text; `kilowatch profiles ...` (:mod:`kilowatch.profiles_cli`) prints them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kilowatch import yamlconfig
from kilowatch.profiles import REFUSED, Profile, Table, Words, explain_vectors, held, load_file
from kilowatch.quantities import QUANTITIES
from kilowatch.registers import DataType, WordOrder

PLAUSIBLE: dict[str, float] = {
    **{f"voltage_l{n}_v": v for n, v in ((1, 231.2), (2, 229.7), (3, 230.4))},
    **{f"voltage_{p}_v": v for p, v in (("l1_l2", 399.1), ("l2_l3", 398.2), ("l3_l1", 400.3))},
    **{f"current_l{n}_a": a for n, a in ((1, 12.5), (2, 9.75), (3, 11.25))},
    "current_n_a": 2.5,
    **{f"active_power_l{n}_w": w for n, w in ((1, 2750.0), (2, 2125.0), (3, 2450.0))},
    **{f"reactive_power_l{n}_var": q for n, q in ((1, 900.0), (2, 700.0), (3, 800.0))},
    **{f"apparent_power_l{n}_va": s for n, s in ((1, 2890.0), (2, 2240.0), (3, 2580.0))},
    **{f"power_factor_l{n}": pf for n, pf in ((1, 0.95), (2, 0.949), (3, 0.95))},
    "active_power_w": 7325.0,
    "reactive_power_var": 2400.0,
    "apparent_power_va": 7710.0,
    "power_factor": 0.95,
    "frequency_hz": 50.0,
    "energy_import_kwh": 12345.5,
    "energy_export_kwh": 12.5,
    "reactive_energy_import_kvarh": 2345.5,
    "reactive_energy_export_kvarh": 3.5,
}
"""A three-phase meter on 230/400 V mains at a moderate load: what a scan meets on a real bus."""


@dataclass(frozen=True)
class Entry:
    """One profile of the library and where it was read from."""

    path: Path
    profile: Profile

    def at(self, *loc: str | int) -> str:
        """`file:line key` of a key in this profile's file, for messages."""
        line = yamlconfig.line_of(self.path, loc)
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        return f"{self.path.name}:{line or 1} {key}"


def load_entries(paths: Sequence[Path]) -> tuple[list[Entry], list[str]]:
    """The profiles that load, and one located problem per error in those that do not."""
    entries, problems = [], []
    for path in paths:
        try:
            entries.append(Entry(path, load_file(path)))
        except yamlconfig.ConfigError as exc:
            problems.extend(exc.problems)
    return entries, problems


MIN_VECTORS = 3
"""Test vectors a library profile needs: enough to pin type, word order and scale for several registers."""


def completeness_problems(entry: Entry) -> list[str]:
    """What a profile lacks before it can be shipped: test vectors, and a fingerprint a scan can name it by."""
    problems = []
    count = len(entry.profile.test_vectors)
    if count < MIN_VECTORS:
        problems.append(
            f"{entry.at('test_vectors')}: {count} test vectors; at least {MIN_VECTORS} are needed, "
            "each from real words or the manual's byte layout"
        )
    if not entry.profile.fingerprint:
        problems.append(f"{entry.at('fingerprint')}: empty; a scan could never name this model")
    return problems


def vector_problems(entry: Entry) -> list[str]:
    """Each test-vector value the profile decodes otherwise, at its `expect` key, with the likely cause."""
    return [
        f"{entry.at('test_vectors', f.index, 'expect', f.quantity)}: expected {f.expected}, got {f.actual}"
        + (f"; {f.hint}" if f.hint else "")
        for f in explain_vectors(entry.profile)
    ]


def name_problems(entries: Sequence[Entry]) -> list[str]:
    """Aliases (or ids) that two profiles claim: a config naming one would get whichever loads first."""
    owner: dict[str, Entry] = {}
    problems = []
    for entry in entries:
        for i, name in enumerate([entry.profile.id, *entry.profile.aliases]):
            first = owner.setdefault(name.lower(), entry)
            if first is not entry:
                where = entry.at("id") if i == 0 else entry.at("aliases", i - 1)
                problems.append(f"{where}: {name!r} already names {first.profile.id} ({first.path.name})")
    return problems


def fingerprint_problems(entries: Sequence[Entry]) -> list[str]:
    """Profiles whose fingerprint misses their own map, and pairs whose fingerprints cannot tell them apart.

    Each profile's map is filled with a plausible reading (:data:`PLAUSIBLE`, its parameters at their
    `value`) and refuses every other address, as the simulator serves it; every fingerprint is tried on it.
    """
    problems = []
    for served in entries:
        words = served.profile.encode(PLAUSIBLE)
        if served.profile.fingerprint and not served.profile.recognises(words):
            problems.append(
                f"{served.at('fingerprint')}: does not identify its own map on a plausible reading "
                f"({_failing(served.profile, words)})"
            )
        for other in entries:
            if other is served or not other.profile.recognises(words):
                continue
            problems.append(
                f"{other.at('fingerprint')}: also identifies a {served.profile.id} meter "
                f"({served.path.name}); {_distinguish(other.profile, served.profile)}"
            )
    return problems


def _failing(profile: Profile, words: Words) -> str:
    i = profile.failing_check(words)
    if i is None:
        return "every check passes"
    table, address, count = profile.check_read(profile.fingerprint[i])
    answer = held(words, table, address, count)
    got = "an exception" if answer == REFUSED else f"words {answer}"
    return f"fingerprint[{i}] reads {table.value} {address:#06x} and gets {got}"


def _distinguish(own: Profile, other: Profile) -> str:
    """A check that `own` would pass and `other` fail, suggested from the two maps."""
    own_map = {(i.table, a) for i in own.located() for a in range(i.address, i.address + i.count)}
    for item in other.located():
        if (item.table, item.address) not in own_map:
            return (
                f"add `{{refuses: {{table: {item.table.value}, address: {item.address:#06x}, count: {item.count}}}}}` "
                f"({other.id} maps {item.label} there) or a model-code check with `equals`"
            )
    other_map = {(i.table, a) for i in other.located() for a in range(i.address, i.address + i.count)}
    for reg in own.registers:
        if (reg.table, reg.address) not in other_map:
            return f"add a range check on {reg.quantity} ({other.id} does not map it) or a model-code check"
    return "the maps are the same: check a model-code parameter with `equals`"


_TYPE_NAMES = {
    **{t.value: t for t in DataType if t is not DataType.STRING},
    "float": DataType.FLOAT32, "real": DataType.FLOAT32, "ieee754": DataType.FLOAT32,
    "double": DataType.FLOAT64, "s16": DataType.INT16, "u16": DataType.UINT16, "signed16": DataType.INT16,
    "unsigned16": DataType.UINT16, "s32": DataType.INT32, "u32": DataType.UINT32, "long": DataType.INT32,
    "signed32": DataType.INT32, "unsigned32": DataType.UINT32, "s64": DataType.INT64, "u64": DataType.UINT64,
}  # fmt: skip
_PREFIXES = {"": 1.0, "k": 1e3, "M": 1e6, "m": 1e-3}


@dataclass(frozen=True)
class Scaffold:
    """A profile's YAML text, and what the person who asked for it must fix before it checks."""

    text: str
    warnings: list[str]


def _unit_factor(given: str, canonical: str) -> float | None:
    """What a value in unit `given` is multiplied by to be in `canonical` (Wh -> kWh: 0.001)."""
    given = given.strip()
    if given in ("", canonical):
        return 1.0
    if canonical == "1":
        return 0.01 if given == "%" else None
    for base in (canonical, canonical[1:]) if canonical[:1] in _PREFIXES else (canonical,):
        prefix_of_canonical = canonical[: len(canonical) - len(base)]
        if given.endswith(base) and given[: len(given) - len(base)] in _PREFIXES:
            return _PREFIXES[given[: len(given) - len(base)]] / _PREFIXES[prefix_of_canonical]
    return None


def _address(text: str, table: Table | None) -> tuple[Table, int, int | None]:
    """Table, wire address and manual address of an address as a manual prints it.

    Without an explicit table, 5- and 6-digit register numbers (30001, 400001) give table and offset.
    """
    number = int(text.strip(), 0)
    if table is not None:
        return table, number, None
    for base, found in ((30001, Table.INPUT), (40001, Table.HOLDING)):
        if base <= number < base + 10_000:
            return found, number - base, number
        if base * 10 - 9 <= number < base * 10 - 9 + 0x10000:
            return found, number - (base * 10 - 9), None
    return Table.INPUT, number, None


def scaffold(
    csv_text: str,
    *,
    profile_id: str,
    manufacturer: str,
    model: str,
    source: str,
    table: Table | None = None,
    word_order: WordOrder = WordOrder.ABCD,
) -> Scaffold:
    """A profile YAML from a register table copied from a manual, as CSV with a header row.

    Columns (case-insensitive): `quantity` (or `name`), `address`, `type`, and optionally `unit`, `scale`,
    `word_order`, `table`. A unit that differs from the quantity's by a prefix (Wh for kWh) sets the
    scale; `scale` multiplies it (0.1 for tenths).
    """
    warnings: list[str] = []
    rows = list(csv.DictReader(io.StringIO(csv_text.strip())))
    lines = []
    has_other_phases = False
    for n, raw in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        name = row.get("quantity") or row.get("name") or ""
        where = f"CSV line {n}"
        if name not in QUANTITIES:
            warnings.append(
                f"{where}: {name!r} is not a quantity name; rename it (`kilowatch profiles show` lists them)"
            )
        has_other_phases |= bool(re.search(r"_l[23]", name))
        given_table = Table(row["table"].lower()) if row.get("table") else table
        try:
            reg_table, address, manual = _address(row.get("address", ""), given_table)
        except ValueError:
            warnings.append(f"{where}: address {row.get('address')!r} is not a number")
            continue
        type_key = re.sub(r"[\s_-]", "", row.get("type", "").lower())
        data_type = _TYPE_NAMES.get(type_key)
        if data_type is None:
            warnings.append(f"{where}: type {row.get('type')!r} is unknown; float32 assumed")
            data_type = DataType.FLOAT32
        scale = float(row["scale"]) if row.get("scale") else 1.0
        if name in QUANTITIES:
            factor = _unit_factor(row.get("unit", ""), QUANTITIES[name].unit)
            if factor is None:
                warnings.append(
                    f"{where}: unit {row.get('unit')!r} does not convert to {name}'s {QUANTITIES[name].unit}"
                )
            else:
                scale *= factor
        fields = [f"quantity: {name}"]
        if reg_table is not Table.INPUT:
            fields.append(f"table: {reg_table.value}")
        fields.append(f"address: {address:#06x}")
        if manual is not None:
            fields.append(f"manual_address: {manual}")
        fields.append(f"type: {data_type.value}")
        order = row.get("word_order") or word_order.value
        if data_type.value[-2:] not in ("16",) and order != WordOrder.ABCD.value:
            fields.append(f"word_order: {order.upper()}")
        if scale != 1.0:
            fields.append(f"scale: {scale:g}")
        lines.append("  - {" + ", ".join(fields) + "}")
    header = [
        f"# {manufacturer} {model}: scaffolded by `kilowatch profiles new`. Check every register against the",
        "# source, then add the serial defaults, at least three test vectors from real words and a fingerprint.",
        f"id: {profile_id}",
        f"manufacturer: {_quoted(manufacturer)}",
        f"model: {_quoted(model)}",
        "aliases: []",
        f"source: {_quoted(source)}",
        f"phases: {3 if has_other_phases else 1}",
        "connection: {unit: 1, baud: 9600, parity: N, stopbits: 1}",
        "registers:",
    ]
    footer = ["test_vectors: []", "fingerprint: []"]
    return Scaffold("\n".join([*header, *lines, *footer]) + "\n", warnings)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def meters_markdown(profiles: Sequence[Profile]) -> str:
    """docs/meters.md: every shipped profile, what it reads and how to reach the meter."""
    out = [
        "# Supported meters",
        "",
        "Generated by `kilowatch profiles docs` from `device_profiles/`; do not edit (`make lint` checks it).",
        "Use the id (or an alias) as a meter's `profile` in `agent.yaml`.",
        "",
        "| Model | Profile id | Aliases | Phases | Serial defaults | Quantities |",
        "|---|---|---|---|---|---|",
    ]
    for p in profiles:
        c = p.connection
        aliases = ", ".join(f"`{a}`" for a in p.aliases) or "-"
        serial = f"unit {c.unit}, {c.baud} {c.bytesize}{c.parity}{c.stopbits}"
        out.append(
            f"| {p.manufacturer} {p.model} | `{p.id}` | {aliases} | {p.phases} | {serial} | {len(p.registers)} |"
        )
    for p in profiles:
        c = p.connection
        tables = sorted({r.table.value for r in p.registers})
        out += [
            "",
            f"## {p.manufacturer} {p.model}",
            "",
            f"- Profile id: `{p.id}`"
            + (f"; aliases: {', '.join(f'`{a}`' for a in p.aliases)}" if p.aliases else ""),
            f"- Phases: {p.phases}" + (f"; wiring: {p.wiring}" if p.wiring else ""),
            f"- Serial defaults: unit {c.unit}, {c.baud} baud, {c.bytesize}{c.parity}{c.stopbits}, "
            f"timeout {c.timeout_s:g} s; up to {p.quirks.max_registers_per_request} registers per request",
            f"- Registers: {', '.join(tables)}",
            f"- Source: {' '.join(p.source.split())}",
            f"- Quantities: {', '.join(f'`{r.quantity}`' for r in p.registers)}",
        ]
    return "\n".join(out) + "\n"
