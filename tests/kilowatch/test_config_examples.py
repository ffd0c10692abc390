"""The sample configurations in deploy/ are generated from the config models and validate as they claim."""

from __future__ import annotations

import re
import shutil
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from agent.config import AgentConfig
from app.cli import app
from app.schemas_cli import examples, generated_files
from collector.config import CollectorConfig
from collector.detectors.config import Sites, load_sites
from kilowatch import yamlconfig
from kilowatch.config_example import render
from tests.paths import REPO

ROOT = REPO
DEPLOY = ROOT / "deploy"

LOADERS: dict[str, Callable[[Path], BaseModel]] = {
    "agent.example.yaml": lambda path: yamlconfig.load(AgentConfig, path),
    "collector.example.yaml": lambda path: yamlconfig.load(CollectorConfig, path),
    "sites.example.yaml": load_sites,
}
"""The loader each sample is read with in service (the agent's and collector's CLI, the collector's
detection)."""

COMMENTED_KEY = re.compile(r"^(\s*)# (?!#)")
"""One level of commenting out on a key line (a ``## `` explanation is left alone)."""


def uncomment(text: str) -> str:
    return "\n".join(COMMENTED_KEY.sub(r"\1", line) for line in text.splitlines())


def same_where_set(shown: Any, uncommented: Any, where: str = "") -> Iterator[str]:
    """Paths at which `uncommented` differs from `shown`, except where `shown` is null (a section that
    is off by default, which uncommenting turns on)."""
    if shown is None:
        return
    if isinstance(shown, dict):
        for key, value in shown.items():
            yield from same_where_set(value, uncommented.get(key), f"{where}.{key}")
    elif isinstance(shown, list):
        if len(shown) != len(uncommented):
            yield where
        for i, (a, b) in enumerate(zip(shown, uncommented, strict=False)):
            yield from same_where_set(a, b, f"{where}[{i}]")
    elif shown != uncommented:
        yield f"{where}: {shown!r} != {uncommented!r}"


def models_under(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """`model` and every model its fields can hold, however nested in unions and collections."""

    def walk(annotation: Any) -> Iterator[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation
        elif get_origin(annotation) in (Annotated, Union, types.UnionType, list, tuple, dict):
            for arg in get_args(annotation):
                yield from walk(arg)

    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        todo += [m for field in current.model_fields.values() for m in walk(field.annotation)]


def test_the_files_in_deploy_are_the_generated_ones() -> None:
    for path, text in generated_files(ROOT / "docs", DEPLOY).items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run `kilowatch schemas`"


@pytest.mark.parametrize("name", sorted(examples()))
def test_every_field_is_described(name: str) -> None:
    model, _ = examples()[name]
    undescribed = [
        f"{m.__name__}.{field}"
        for m in models_under(model)
        for field, info in m.model_fields.items()
        if not info.description
    ]
    assert undescribed == []


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_each_example_loads_and_its_commented_defaults_are_the_real_ones(name: str, tmp_path: Path) -> None:
    load = LOADERS[name]
    shown = load(DEPLOY / name)
    text = (DEPLOY / name).read_text(encoding="utf-8")
    once = tmp_path / "once" / name
    once.parent.mkdir()
    once.write_text(uncomment(text), encoding="utf-8")
    assert list(same_where_set(shown.model_dump(mode="json"), load(once).model_dump(mode="json"))) == []
    # Every level uncommented: each section that is off by default turned on as shown; still valid.
    fully = tmp_path / name
    while (uncommented := uncomment(text)) != text:
        text = uncommented
    assert not any(line.lstrip().startswith("# ") for line in text.splitlines())
    fully.write_text(text, encoding="utf-8")
    load(fully)


def test_the_sites_example_documents_the_defaults_on_its_first_site() -> None:
    sites = load_sites(DEPLOY / "sites.example.yaml").sites
    first = next(iter(sites.values()))
    default = Sites.model_validate({"sites": {"s": {}}}).sites["s"]
    assert first.model_copy(update={"meters": {}}) == default


def test_the_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path: Path) -> None:
    docs, deploy = tmp_path / "docs", tmp_path / "deploy"
    shutil.copytree(ROOT / "docs", docs)
    shutil.copytree(DEPLOY, deploy)
    args = ["schemas", "--out", str(docs), "--deploy", str(deploy)]
    stale = deploy / "agent.example.yaml"
    stale.write_text(stale.read_text().replace("# poll_interval_s: 10.0", "# poll_interval_s: 5.0"))

    result = CliRunner().invoke(app, [*args, "--check"])
    assert result.exit_code == 1
    assert str(stale) in result.output
    assert "poll_interval_s: 5.0" in stale.read_text()

    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--check"]).exit_code == 0
    assert "# poll_interval_s: 10.0" in stale.read_text()


class _Inner(BaseModel):
    level: int = Field(3, ge=1, le=5, description="How loud")


class _Outer(BaseModel):
    name: str = Field(description="Who", examples=["x"])
    inner: _Inner = Field(default_factory=_Inner, description="Nested")
    extra: _Inner | None = Field(None, description="Off unless set")


def test_render_comments_out_optional_keys_with_their_defaults_and_ranges() -> None:
    text = render(_Outer, title="Title")
    body = text.split("\n\n", 1)[1]
    assert body == (
        "## Who\n"
        "name: x\n"
        "## Nested\n"
        "# inner:\n"
        "#   ## How loud\n"
        "#   level: 3  # 1 to 5\n"
        "## Off unless set\n"
        "# extra:\n"
        "#   level: 3\n"
    )
    assert text.startswith("## Title\n")


def test_render_refuses_a_field_without_description_or_a_required_one_without_example() -> None:
    class Undescribed(BaseModel):
        name: str = "x"

    class NoExample(BaseModel):
        name: str = Field(description="Who")

    with pytest.raises(ValueError, match=r"Undescribed\.name has no description"):
        render(Undescribed, title="t")
    with pytest.raises(ValueError, match=r"NoExample\.name is required but has no example"):
        render(NoExample, title="t")
