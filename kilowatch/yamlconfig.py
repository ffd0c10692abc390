"""Load a YAML file into a pydantic model with errors that name the file, the line and the key.

Every YAML boundary (agent config, collector config, device profiles) goes through :func:`load`, so a
technician always reads something like ``agent.yaml:14 buses[0].meters[2].unit: Input should be less
than or equal to 247`` and never a traceback. That holds for files that are not YAML at all (binary, not
UTF-8, too large, nested too deeply) and for a key given twice in one mapping, which YAML libraries
otherwise accept silently with the last value winning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

MAX_BYTES = 2**20
"""Largest file :func:`load` reads: 1 MiB is hundreds of times a large agent config or device profile,
and parses in about a second; a larger file is a mistake (or an attack), not a config."""


class ConfigError(Exception):
    """A configuration or data file is unusable; `problems` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        super().__init__("\n".join(problems))


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _strip_tags(data: Any, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """`loc` without the parts that name no key of the data: pydantic inserts a union's tag (``tcp`` in
    ``buses[0].tcp.meters[2]``) that the file does not contain. The last part is always kept, since a
    missing key is, by definition, absent from the mapping."""
    kept: list[int | str] = []
    for i, part in enumerate(loc):
        if isinstance(data, dict) and part not in data and i < len(loc) - 1:
            continue
        kept.append(part)
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
    return tuple(kept)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest YAML node that `loc` reaches."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def line_of(path: Path, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest key `loc` reaches in the YAML file at `path` (None: unreadable)."""
    try:
        return _line_of(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), loc)
    except (OSError, yaml.YAMLError):
        return None


_SECRET_KEY = re.compile(r"password|token|secret|key|share_group", re.IGNORECASE)
"""Keys whose values may be secrets (a replicas' share group is one: collector.config.SHARE_GROUP)."""
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def _describe(error: dict[str, Any]) -> str:
    """The problem, quoting the offending value unless it may be a secret (those never reach a terminal)."""
    msg = str(error["msg"])
    if error["type"] in {"missing", "extra_forbidden"}:
        return msg.lower()
    value = error.get("input")
    if isinstance(value, dict | list) or value is None:
        return msg
    if any(isinstance(part, str) and _SECRET_KEY.search(part) for part in error["loc"]):
        return f"(value hidden): {msg}"
    return f"{_URL_CREDENTIALS.sub('***@', repr(value))}: {msg}"


def validate(model: type[M], data: Any, path: Path | str, node: yaml.Node | None = None) -> M:
    """Validate already-parsed data, turning a ValidationError into a ConfigError with line numbers."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            loc = _strip_tags(data, loc)
            line = _line_of(node, loc)
            where = f"{Path(path).name}:{line}" if line else Path(path).name
            problems.append(f"{where} {_format_loc(loc)}: {_describe(dict(error))}")
        raise ConfigError(path, problems) from exc


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, refusing one over MAX_BYTES without reading it all."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, [f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    if len(raw) > MAX_BYTES:
        raise ConfigError(path, [f"{path.name}: larger than {MAX_BYTES} bytes: not a config file"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            path,
            [f"{path.name}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}): binary or another encoding"],
        ) from exc


def _duplicate_keys(node: yaml.Node, path: Path) -> list[str]:
    """Every key given twice in one mapping, with both lines; merge keys (``<<``) may repeat."""
    found: list[tuple[int, str]] = []
    pending = [node]
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if (seen := first.get((key.tag, key.value))) is not None:
                        found.append((line, f"duplicate key {key.value!r}: already given at line {seen}"))
                    else:
                        first[(key.tag, key.value)] = line
                pending.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return [f"{path.name}:{line} {problem}" for line, problem in sorted(found)]


def load(model: type[M], path: Path | str) -> M:
    """Read `path` as YAML and validate it as `model`."""
    path = Path(path)
    text = _read_text(path)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise ConfigError(path, [f"{path.name}: the file is empty"])
            if duplicates := _duplicate_keys(node, path):
                raise ConfigError(path, duplicates)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character #x{exc.character:04x} is not allowed in YAML: binary?"
        raise ConfigError(path, [f"{path.name}:{line}: not valid YAML: {problem}"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"{where}: not valid YAML: {problem}"]) from exc
    except RecursionError as exc:
        raise ConfigError(path, [f"{path.name}: nested too deeply to be a config file"]) from exc
    if data is None:
        raise ConfigError(path, [f"{path.name}: the file is empty"])
    return validate(model, data, path, node)
