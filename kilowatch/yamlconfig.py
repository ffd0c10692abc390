"""Load a YAML file into a pydantic model with errors that name the file, the line and the key.

Every YAML boundary (agent config, collector config, device profiles) goes through :func:`load`, so a
technician always reads something like ``agent.yaml:14 buses[0].meters[2].unit: Input should be less
than or equal to 247`` and never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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


_SECRET_KEY = re.compile(r"password|token|secret|key", re.IGNORECASE)
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


def load(model: type[M], path: Path | str) -> M:
    """Read `path` as YAML and validate it as `model`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"{where}: not valid YAML: {problem}"]) from exc
    if data is None:
        raise ConfigError(path, [f"{path.name}: the file is empty"])
    return validate(model, data, path, node)
