"""Only the store speaks SQL: no string literal outside ``collector/store/`` (and the agent's spool, its
one storage module) holds a SQL statement."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.paths import REPO

ROOT = REPO
SCANNED = ("agent", "app", "collector", "kilowatch", "sim")
ALLOWED = (ROOT / "collector" / "store", ROOT / "agent" / "spool.py")
SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(TABLE|(UNIQUE\s+)?INDEX|VIEW|TRIGGER)\b|\bDROP\s+(TABLE|INDEX)\b|\bALTER\s+TABLE\b"
    r"|\bPRAGMA\s+\w+|\b(BEGIN|COMMIT|ROLLBACK)\b(\s+(IMMEDIATE|TRANSACTION))?\s*$"
)
"""Statements as code writes them (keywords in capitals), not prose that mentions a table."""


def _allowed(path: Path) -> bool:
    return any(path == allowed or allowed in path.parents for allowed in ALLOWED)


def sql_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each string literal (f-string parts included) in `path` that holds SQL, in order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    )


def test_the_pattern_finds_statements_and_skips_prose(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        'A = "SELECT ts FROM readings"\nB = f"INSERT OR IGNORE INTO t VALUES ({1})"\nC = "PRAGMA user_version"\n'
        'D = "BEGIN IMMEDIATE"\nE = "select the rows from a table; update the docs"\n'
    )
    assert [text for _, text in sql_literals(source)] == [
        "SELECT ts FROM readings", "INSERT OR IGNORE INTO t VALUES (", "PRAGMA user_version", "BEGIN IMMEDIATE"
    ]  # fmt: skip


def test_no_sql_outside_the_store() -> None:
    found = [
        hit
        for package in SCANNED
        for path in sorted((ROOT / package).rglob("*.py"))
        if not _allowed(path)
        for line, text in sql_literals(path)
        for hit in [f"{path.relative_to(ROOT)}:{line}: {text[:80]!r}"]
    ]
    assert found == [], "SQL outside collector/store/ (move it into the store):\n" + "\n".join(found)


def test_the_store_is_scanned_for_what_it_holds() -> None:
    """The pattern matches the store's own statements, so an empty result above means something."""
    assert sql_literals(ROOT / "collector" / "store" / "reader.py")
