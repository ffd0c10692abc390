"""Ledgers on both backends for the tests: a SQLite file, or a fresh database on the session's PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from app.processes import PostgreSQL
from collector.store.connection import Location, Postgres
from collector.store.postgres import pg_sql

LedgerAt = Callable[[str], Location]
"""``ledger_at(name)``: the ledger of that name for this test, empty when first asked for."""

BACKENDS = ("sqlite", "postgresql")

_numbers = itertools.count()


def admin(server: PostgreSQL) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.url(), autocommit=True)


@contextmanager
def ledgers(backend: str, tmp_path: Path, server: Callable[[], PostgreSQL]) -> Iterator[LedgerAt]:
    """Make ledgers on `backend` (`server` gives the PostgreSQL, started once); drop their databases after."""
    made: dict[str, Location] = {}
    databases: list[str] = []

    def ledger_at(name: str) -> Location:
        if name not in made:
            if backend == "sqlite":
                made[name] = tmp_path / f"{name}.db"
            else:
                database = f"ledger_{next(_numbers)}_{name.replace('-', '_')}"
                with admin(server()) as db:
                    db.execute(f'CREATE DATABASE "{database}"')
                databases.append(database)
                made[name] = Postgres(server().url(database))
        return made[name]

    try:
        yield ledger_at
    finally:
        if databases:
            with admin(server()) as db:
                for database in databases:
                    db.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def execute(where: Location, sql: str, params: tuple[object, ...] = ()) -> None:
    """Run one statement (SQLite's placeholders) on the ledger, on a connection of its own, and commit."""
    if isinstance(where, Postgres):
        with psycopg.connect(where.url) as pg:
            pg.execute(pg_sql(sql), params)
    else:
        with contextlib.closing(sqlite3.connect(where)) as db, db:
            db.execute(sql, params)


def ledger_settings(where: Location) -> dict[str, str]:
    """The collector configuration's `ledger` section for `where`."""
    return {"url": where.url} if isinstance(where, Postgres) else {"path": str(where)}


def drop_database(server: PostgreSQL, ledger: Postgres) -> None:
    """Drop `ledger`'s database, ending its sessions."""
    with admin(server) as db:
        db.execute(f'DROP DATABASE "{database_of(ledger)}" WITH (FORCE)')


def database_of(ledger: Postgres) -> str:
    return urllib.parse.urlsplit(ledger.url).path.lstrip("/")


def terminate_backends(server: PostgreSQL, database: str) -> int:
    """End every session on `database` (what an administrator or a failover does); how many there were."""
    with admin(server) as db:
        rows = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)
