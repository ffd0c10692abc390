"""Connections to the ledger's file, each set up for its role, and the closing they share."""

from __future__ import annotations

import logging
import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

from collector.store.schema import migrate

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for the other one (ledger or alerts) to finish its transaction."""

READ_BUSY_TIMEOUT_MS = 5_000

_UNWRITABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)
"""SQLite's primary result codes that say the file cannot be written now, whatever is being written."""


class LedgerUnwritable(Exception):
    """The ledger cannot commit now, whatever the data: a full disk, an I/O error, a read-only or locked or
    damaged file. Nothing of the transaction was stored; the same transaction may succeed later, so the
    caller keeps what it was storing (the ingestor does not acknowledge it) and tries again."""


def unwritable(exc: BaseException) -> bool:
    """Whether `exc` is SQLite saying the file cannot be written (not something about the data written)."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code is not None and code & 0xFF in _UNWRITABLE


class Closing(ABC):
    """Closes its connection on ``close()`` and at the end of a ``with`` block."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_writer(path: Path) -> sqlite3.Connection:
    """The ingest writer's connection: WAL, every commit fsynced, a large page cache; schema current."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file: before its first table, or it has no effect
    db.execute("PRAGMA journal_mode=WAL")
    # WAL + synchronous=FULL: each commit (one per group of messages) fsyncs the WAL before the messages
    # are acknowledged, so not even a power cut can undo readings the broker was told are stored. NORMAL
    # would skip that fsync and could lose acknowledged groups on power loss; measured here, FULL cost
    # nothing visible at 50 messages per commit (22-25k readings/s).
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB of page cache for the writer
    db.execute("PRAGMA temp_store=MEMORY")
    migrate(db, path)
    _reclaimable(db, path)
    return db


def _reclaimable(db: sqlite3.Connection, path: Path) -> None:
    """Make a file written without incremental vacuum give back what pruning frees (see
    :mod:`collector.store.retention`): a file switches only by being rewritten whole, once."""
    (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
    if mode == 2:  # INCREMENTAL
        return
    size = path.stat().st_size
    log.warning(
        "%s: rewriting the ledger once (VACUUM, %.0f MB; needs as much free disk) so that the space its "
        "retention frees is given back",
        path, size / 1e6,
    )  # fmt: skip
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("VACUUM")


def open_side_writer(path: Path) -> sqlite3.Connection:
    """A second writer beside the ingest writer (alerts): waits up to BUSY_TIMEOUT_MS for it."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode=WAL")
    migrate(db, path)
    return db


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection (WAL lets it read while a writer commits)."""
    uri = path.absolute().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}")
    return db
