"""The layers of the README (How the parts fit) hold: import-linter's contracts from pyproject.toml, run
on the real tree and on a copy with one import pointing the wrong way (which they must catch)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

ROOT = REPO
PACKAGES = ("app", "agent", "collector", "sim", "kilowatch")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts, importing the packages from `tree`."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree, env={"PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_tree_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "wrong_import", "complaint"),
    [
        ("kilowatch/quantities.py", "import collector", "kilowatch is not allowed to import collector"),
        ("collector/validate.py", "import sim.scenario", "collector is not allowed to import sim"),
        ("agent/spool.py", "import collector.ledger", "agent is not allowed to import collector"),
        ("sim/meter.py", "import app.processes", "sim is not allowed to import app"),
    ],
)
def test_an_import_pointing_the_wrong_way_breaks_lint(
    tmp_path: Path, module: str, wrong_import: str, complaint: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / module).open("a") as source:
        source.write(f"\n\ndef _wrong_way() -> None:\n    {wrong_import}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert complaint in result.stdout
