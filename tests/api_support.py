"""The collector's API in tests: the real app with its lifespan run, called through httpx's ASGI transport;
what the API and the service leave open."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psycopg
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from collector.access import Access, Role
from collector.store import Location, Postgres
from collector.store.access import AccessStore


def api_key(ledger: Location, role: Role = Role.ADMIN, sites: list[str] | None = None) -> str:
    """A new API key with `role` on `sites` (None: every site), stored in the ledger at `ledger`."""
    with AccessStore(ledger) as store:
        _, key = Access(store).create_key("tests", role, sites, 0)
    return key


@asynccontextmanager
async def api_client(app: FastAPI, ledger: Location | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` while its lifespan runs (httpx's transport alone does not run it), with a new
    admin API key stored in `ledger` (None: no credentials). HTTPS, so that the client sends Secure cookies;
    an application error is answered (500), not raised."""
    headers = {} if ledger is None else {"Authorization": f"Bearer {api_key(ledger)}"}
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
            base_url="https://collector",
            headers=headers,
        ) as client,
    ):
        yield client


def open_connections(ledger: Location) -> int:
    """How many connections to `ledger` are open: this process's file descriptors on a SQLite file, the
    sessions on a PostgreSQL database (whoever opened them: the tests open theirs one at a time)."""
    if isinstance(ledger, Postgres):
        with psycopg.connect(ledger.url) as db:
            row = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
        assert row is not None
        return int(row[0])
    return open_descriptors(ledger)


def open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors are open on `path`."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except FileNotFoundError:  # the descriptor listing the directory itself, closed by now
            continue
    return count
