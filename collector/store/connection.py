"""Connections to the ledger, each set up for its role, on either backend, and the closing they share.

The ledger is a SQLite file (a :class:`~pathlib.Path`, the embedded default) or a PostgreSQL database
(:class:`Postgres`). The store's modules run the same statements on both through :class:`Db`: SQLite's
placeholders (``?``, ``:name``) and the SQL the two share (``ON CONFLICT``, ``RETURNING``, window
functions); the few expressions that differ come from the connection's :class:`Dialect`.
"""

from __future__ import annotations

import logging
import sqlite3
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import psycopg

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

_PG_UNWRITABLE_CLASSES = ("08", "53", "57", "58", "40")
"""PostgreSQL's SQLSTATE classes that say the server cannot take the transaction now, whatever it holds:
connection exceptions, insufficient resources (disk full), operator intervention (shutdown, a terminated
backend), system errors (I/O), rollbacks (a serialization failure, a deadlock)."""

_PG_UNWRITABLE_STATES = frozenset({"25006", "42501", "55P03"})
"""read-only transaction (a standby), insufficient privilege (a revoked grant), lock not available."""

DatabaseError: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
"""What either backend raises for a ledger it cannot open, read or write."""
UnstorableValue: tuple[type[Exception], ...] = (sqlite3.DataError, psycopg.DataError)
"""A value the backend cannot hold or compare, whatever its state (PostgreSQL's text has no NUL character)."""


class LedgerUnwritable(Exception):
    """The ledger cannot commit now, whatever the data: a full disk, an I/O error, a read-only or locked or
    damaged file, a PostgreSQL server that is down, unreachable or refuses writes. Nothing of the transaction
    was stored; the same transaction may succeed later, so the caller keeps what it was storing (the
    ingestor does not acknowledge it) and tries again."""


def unwritable(exc: BaseException) -> bool:
    """Whether `exc` is the backend saying the ledger cannot be written (not something about the data)."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:  # no answer from the server: the connection failed, or psycopg refused the data
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return state[:2] in _PG_UNWRITABLE_CLASSES or state in _PG_UNWRITABLE_STATES
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code is not None and code & 0xFF in _UNWRITABLE


@contextmanager
def unwritable_raised() -> Iterator[None]:
    """A backend error that says the ledger cannot be written now re-raised as :class:`LedgerUnwritable`
    (chained from it), for the caller to keep what it was storing and try again; any other as it is."""
    try:
        yield
    except DatabaseError as exc:
        if unwritable(exc):
            raise LedgerUnwritable(str(exc)) from exc
        raise


class Dialect(StrEnum):
    """Which backend a connection speaks to, and the expressions whose SQL differs between them."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"

    def octet_length(self, column: str) -> str:
        """Bytes of a text or blob column."""
        return f"length(CAST({column} AS BLOB))" if self is Dialect.SQLITE else f"octet_length({column})"

    def greatest(self, a: str, b: str) -> str:
        """The larger of two values that are never NULL."""
        return f"max({a}, {b})" if self is Dialect.SQLITE else f"GREATEST({a}, {b})"


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL ledger, by its libpq URL (``postgresql://user:password@host:port/dbname``).

    Printed (in logs, errors, ``repr``) without its password.
    """

    url: str

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"Postgres({redact(self.url)!r})"


Location = Path | Postgres
"""Where a ledger is: a SQLite file or a PostgreSQL database."""


def redact(url: str) -> str:
    """`url` without the password it may carry (in its user part or as a ``password`` parameter)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k.lower() != "password"]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def location(where: Path | str | Postgres) -> Location:
    """A :class:`Postgres` as it is; anything else is a SQLite file's path."""
    return where if isinstance(where, Postgres) else Path(where)


class Cursor(Protocol):
    """What the store uses of a cursor on either backend."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """A connection on either backend, in autocommit mode until :meth:`begin`."""

    dialect: ClassVar[Dialect]

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    def begin(self, *, write: bool = True) -> None:
        """Start a transaction: one that writes (it waits for, or locks out, other writers on SQLite), or
        one that reads a single state of the ledger."""

    def close(self) -> None: ...


class SqliteDb(sqlite3.Connection):
    """A SQLite connection as a :class:`Db`."""

    dialect: ClassVar[Dialect] = Dialect.SQLITE

    def begin(self, *, write: bool = True) -> None:
        self.execute("BEGIN IMMEDIATE" if write else "BEGIN")


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


def _sqlite(path: Path, *, mapping_rows: bool) -> SqliteDb:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=SqliteDb)
    if mapping_rows:
        db.row_factory = sqlite3.Row
    return db


def open_writer(where: Location) -> Db:
    """The ingest writer's connection; schema current. SQLite: WAL, every commit fsynced, a large page
    cache. PostgreSQL: the readings' partitions kept ahead of time."""
    if isinstance(where, Postgres):
        from collector.store import postgres

        return postgres.open_writer(where)
    db = _sqlite(where, mapping_rows=False)
    if db.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new file: before its first table, or it has
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # no effect (and on a file in use it waits for its lock)
    db.execute("PRAGMA journal_mode=WAL")
    # WAL + synchronous=FULL: each commit (one per group of messages) fsyncs the WAL before the messages
    # are acknowledged, so not even a power cut can undo readings the broker was told are stored. NORMAL
    # would skip that fsync and could lose acknowledged groups on power loss; measured here, FULL cost
    # nothing visible at 50 messages per commit (22-25k readings/s).
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB of page cache for the writer
    db.execute("PRAGMA temp_store=MEMORY")
    migrate(db, where)
    _reclaimable(db, where)
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


def open_side_writer(where: Location, *, mapping_rows: bool = False) -> Db:
    """A second writer beside the ingest writer (alerts, access); on SQLite it waits up to
    BUSY_TIMEOUT_MS for it. With `mapping_rows`, rows are read by column name."""
    if isinstance(where, Postgres):
        from collector.store import postgres

        return postgres.open_side_writer(where, mapping_rows=mapping_rows)
    db = _sqlite(where, mapping_rows=mapping_rows)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    migrate(db, where)
    return db


def open_reader(where: Location) -> Db:
    """A read-only connection (SQLite's WAL lets it read while a writer commits)."""
    if isinstance(where, Postgres):
        from collector.store import postgres

        return postgres.open_reader(where)
    uri = where.absolute().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False, factory=SqliteDb)
    db.execute(f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}")
    return db
