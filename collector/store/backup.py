"""Copies of the ledger file taken while the collector writes, and putting one back.

Both go through SQLite's online backup API (``sqlite3.Connection.backup``), never a file copy: a copy of the
file alone misses what still sits in the WAL, and a copy taken while the writer commits can be torn. The
backup copies every page in one step inside one read transaction, so it is one consistent state of the
ledger; WAL lets the collector keep committing meanwhile.

A running collector keeps its connections open, and in WAL mode each holds a shared lock on the file for as
long as it is open. :func:`restore` asks for the exclusive lock without waiting and keeps it while it
writes, so it refuses a ledger any process holds, and no collector can open the file halfway through.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from collector.store.schema import SCHEMA_VERSION, version


class BackupError(Exception):
    """A backup or restore cannot proceed; the message names the file and the cause."""


class LedgerInUse(BackupError):
    """Another process (a running collector) has the ledger open."""


def backup(ledger: Path, out: Path) -> None:
    """Write a consistent copy of `ledger` to `out` (mode 0640, rollback journal: one self-contained file),
    checked for integrity before it replaces `out`."""
    if not ledger.is_file():
        raise BackupError(f"{ledger}: no ledger")
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        source = sqlite3.connect(ledger.absolute().as_uri() + "?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                source.backup(copy)  # pages=-1: every page in one step, one read transaction
                copy.execute("PRAGMA journal_mode=DELETE")
                _check(copy, partial)
            finally:
                copy.close()
        finally:
            source.close()
        partial.chmod(0o640)
        _fsync(partial)
        partial.replace(out)
        _fsync(out.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back {ledger} up to {out}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def check(path: Path) -> int:
    """`path`'s schema version, once it is known to be an intact kilowatch ledger this release can open."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    try:
        db = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        try:
            return _check(db, path)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite ledger ({exc})") from exc


def _check(db: sqlite3.Connection, path: Path) -> int:
    problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise BackupError(f"{path}: integrity check failed: {'; '.join(problems[:5])}")
    found = version(db)
    if found > SCHEMA_VERSION:
        raise BackupError(
            f"{path}: ledger schema version {found} is newer than this release's {SCHEMA_VERSION}"
        )
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meters", "readings", "intervals"} <= tables:
        raise BackupError(f"{path}: not a kilowatch ledger (no meters, readings and intervals tables)")
    return found


def restore(backup_file: Path, ledger: Path, *, replace: bool) -> int:
    """Put `backup_file` in place of `ledger` (a new file, or an existing one when `replace`); its schema
    version. The collector migrates an older version when it next opens the file."""
    found = check(backup_file)
    if ledger.exists() and not replace:
        raise BackupError(f"{ledger} exists: restoring replaces it, say so with --force")
    try:
        target = sqlite3.connect(ledger, isolation_level=None, timeout=0)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {ledger}: {exc}") from exc
    try:
        # Held until close: the exclusive lock, refused at once while any other connection has the file.
        target.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            target.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise LedgerInUse(
                f"{ledger} is open in another process (a running collector?): stop it first ({exc})"
            ) from exc
        target.execute("COMMIT")
        source = sqlite3.connect(backup_file.absolute().as_uri() + "?mode=ro", uri=True)
        try:
            source.backup(target)
        finally:
            source.close()
        _check(target, ledger)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot restore {backup_file} to {ledger}: {exc}") from exc
    finally:
        target.close()
    return found


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
