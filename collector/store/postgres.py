"""PostgreSQL connections for the store (psycopg 3), speaking the store's statements as they are written.

The store writes its SQL once, with SQLite's placeholders; :func:`pg_sql` turns them into psycopg's
(``?`` into ``%s``, ``:name`` into ``%(name)s``, a literal ``%`` doubled) once per statement. No library
does this for the two paramstyles, and a tokenizer that skips quoted text is all it takes.

Each connection runs in autocommit mode, as the SQLite ones do, so a transaction is an explicit
``BEGIN ... COMMIT`` of its owner. A connection the server dropped (a restart, a terminated backend), or
that failed for a reason a new session may not meet (the server read-only, out of room, a revoked grant),
is opened again before the next transaction or statement outside one; never inside a transaction, whose
statements must not run without it. The caller learns from the error that its transaction is lost and may
try it again.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import RowMaker, tuple_row

from collector.store import pg_schema
from collector.store.connection import Dialect, Postgres, unwritable

CONNECT_TIMEOUT_S = 10
PARTITION_CHECK_MS = 3_600_000
"""How often the writer makes sure the readings' partitions reach ahead of the clock."""

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?|(?<![:\w]):([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """`sql` with SQLite's placeholders as psycopg's; a ``?`` or ``:`` in quoted text is left alone (psycopg
    reads every ``%``, quoted or not, so each is doubled)."""

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if match.group(1) is not None:
            return f"%({match.group(1)})s"
        return text.replace("%", "%%")

    return _TOKEN.sub(replace, sql)


class MappingRow(tuple[Any, ...]):
    """A row read by position or by column name, and turned into a dict by ``dict(row)``: what
    ``sqlite3.Row`` is to the store's code that reads rows by name."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names.index(key) if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


def mapping_row(cursor: psycopg.Cursor[Any]) -> RowMaker[MappingRow]:
    names = tuple(column.name for column in cursor.description or ())

    def make(values: Sequence[Any]) -> MappingRow:
        row = MappingRow(values)
        row.names = names
        return row

    return make


class PgDb:
    """A psycopg connection as a :class:`~collector.store.connection.Db`."""

    dialect: ClassVar[Dialect] = Dialect.POSTGRESQL

    def __init__(self, where: Postgres, *, read_only: bool, mapping_rows: bool, partitions: bool) -> None:
        self._where = where
        self._read_only = read_only
        self._mapping_rows = mapping_rows
        self._partitions = partitions
        self._partitions_checked_at = 0
        self._began = False
        """Inside a transaction this connection began (its statements must not move to a new session)."""
        self._stale = False
        """The last error says a new session may fare better."""
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        options = "-c default_transaction_read_only=on" if self._read_only else ""
        # libpq's errors name the host and port, never the password; callers name the ledger by
        # str(Postgres), which leaves it out too.
        conn: psycopg.Connection[Any] = psycopg.connect(
            self._where.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="kilowatch-collector",
            options=options,
            row_factory=mapping_row if self._mapping_rows else tuple_row,
        )
        return conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status in (
            TransactionStatus.INTRANS,
            TransactionStatus.INERROR,
            TransactionStatus.ACTIVE,
        )

    def execute(self, sql: str, parameters: Any = None, /) -> psycopg.Cursor[Any]:
        if sql.startswith("BEGIN"):
            self._usable()
            self._began = True
        elif not self._began:
            self._usable()
        try:
            return self._conn.execute(pg_sql(sql), () if parameters is None else parameters)
        except psycopg.Error as exc:
            self._stale = self._stale or unwritable(exc)
            raise
        finally:
            if sql in ("COMMIT", "ROLLBACK"):
                self._began = False

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        if not self._began:
            self._usable()
        cursor = self._conn.cursor()
        try:
            cursor.executemany(pg_sql(sql), parameters)
        except psycopg.Error as exc:
            self._stale = self._stale or unwritable(exc)
            raise
        return cursor

    def _usable(self) -> None:
        if self._conn.closed or self._conn.broken or self._stale:
            self._conn.close()
            self._conn = self._connect()
            self._stale = False

    def scalar(self, sql: str, parameters: Any = None) -> Any:
        """The first column of the first row of `sql`'s result, whatever rows this connection reads as."""
        if not self._began:
            self._usable()
        row = (
            self._conn.cursor(row_factory=tuple_row)
            .execute(pg_sql(sql), () if parameters is None else parameters)
            .fetchone()
        )
        return None if row is None else row[0]

    def begin(self, *, write: bool = True) -> None:
        """BEGIN (a read: one snapshot of the ledger); the writer first adds the readings' partitions that
        time has made due."""
        self.keep_partitions()
        self.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def keep_partitions(self) -> None:
        """The writer's: add the readings' partitions that time has made due (checked hourly)."""
        if self._partitions:
            now_ms = time.time_ns() // 1_000_000
            if now_ms - self._partitions_checked_at >= PARTITION_CHECK_MS:
                pg_schema.add_partitions(self, now_ms)
                self._partitions_checked_at = now_ms

    def close(self) -> None:
        self._conn.close()


def open_writer(where: Postgres) -> PgDb:
    db = PgDb(where, read_only=False, mapping_rows=False, partitions=True)
    pg_schema.migrate(db, where)
    db.keep_partitions()
    return db


def open_side_writer(where: Postgres, *, mapping_rows: bool) -> PgDb:
    db = PgDb(where, read_only=False, mapping_rows=mapping_rows, partitions=False)
    pg_schema.migrate(db, where)
    return db


def open_reader(where: Postgres) -> PgDb:
    return PgDb(where, read_only=True, mapping_rows=False, partitions=False)
