"""Access control's rows: users, API keys and browser sessions, in three tables of the ledger's file (migration 3).

Only hashes of secrets are stored: :mod:`collector.access` makes and checks them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.store import connection
from collector.store.connection import Db, Location, location


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    sites: list[str] | None
    """None: every site."""
    password_hash: str
    created_at: int


@dataclass(frozen=True)
class KeyRow:
    id: str
    name: str
    role: str
    sites: list[str] | None
    """None: every site."""
    secret_hash: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True)
class SessionRow:
    user: UserRow
    csrf_token: str
    expires_at: int


def _sites(text: str | None) -> list[str] | None:
    return None if text is None else list(json.loads(text))


def _sites_json(sites: list[str] | None) -> str | None:
    return None if sites is None else json.dumps(sorted(sites))


def _user(row: Mapping[str, Any]) -> UserRow:
    return UserRow(row["name"], row["role"], _sites(row["sites"]), row["password_hash"], row["created_at"])


class AccessStore(connection.Closing):
    """Users, keys and sessions on a connection of their own to the ledger (brought to the current schema if
    it is not). Methods are synchronous and serialised by a lock; async callers use a thread."""

    def __init__(self, where: Path | str | Location) -> None:
        self._lock = threading.Lock()
        self._db = connection.open_side_writer(location(where), mapping_rows=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[Db]:
        with self._lock:
            self._db.begin()
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Mapping[str, Any]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # Users

    def add_user(
        self, name: str, role: str, sites: list[str] | None, password_hash: str, now_ms: int
    ) -> bool:
        """False if a user of that name exists already."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO access_users (name, role, sites, password_hash, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, role, _sites_json(sites), password_hash, now_ms),
            )
            return cursor.rowcount == 1

    def user(self, name: str) -> UserRow | None:
        rows = self._query("SELECT * FROM access_users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    def users(self) -> list[UserRow]:
        return [_user(row) for row in self._query("SELECT * FROM access_users ORDER BY name")]

    def remove_user(self, name: str) -> bool:
        """Remove the user and end its sessions; False if there is no such user."""
        with self._transaction() as db:
            return db.execute("DELETE FROM access_users WHERE name = ?", (name,)).rowcount == 1

    def set_password(self, name: str, password_hash: str) -> bool:
        """Replace the password and end the user's sessions; False if there is no such user."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE access_users SET password_hash = ? WHERE name = ?", (password_hash, name)
            ).rowcount
            db.execute('DELETE FROM access_sessions WHERE "user" = ?', (name,))
            return changed == 1

    # API keys

    def add_key(
        self, key_id: str, name: str, role: str, sites: list[str] | None, secret_hash: str, now_ms: int
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO access_keys (id, name, role, sites, secret_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, role, _sites_json(sites), secret_hash, now_ms),
            )

    def key(self, key_id: str) -> KeyRow | None:
        rows = self._query("SELECT * FROM access_keys WHERE id = ?", (key_id,))
        return self._key(rows[0]) if rows else None

    def api_keys(self) -> list[KeyRow]:
        return [self._key(row) for row in self._query("SELECT * FROM access_keys ORDER BY created_at, id")]

    @staticmethod
    def _key(row: Mapping[str, Any]) -> KeyRow:
        return KeyRow(
            row["id"],
            row["name"],
            row["role"],
            _sites(row["sites"]),
            row["secret_hash"],
            row["created_at"],
            row["revoked_at"],
        )

    def revoke_key(self, key_id: str, now_ms: int) -> bool:
        """False if there is no such key or it is revoked already."""
        with self._transaction() as db:
            return (
                db.execute(
                    "UPDATE access_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (now_ms, key_id),
                ).rowcount
                == 1
            )

    # Sessions

    def add_session(self, token_hash: str, user: str, csrf_token: str, now_ms: int, expires_at: int) -> None:
        """Store a session and forget the expired ones."""
        with self._transaction() as db:
            db.execute("DELETE FROM access_sessions WHERE expires_at <= ?", (now_ms,))
            db.execute(
                'INSERT INTO access_sessions (token_hash, "user", csrf_token, created_at, expires_at)'
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash, user, csrf_token, now_ms, expires_at),
            )

    def session(self, token_hash: str, now_ms: int) -> SessionRow | None:
        """The unexpired session with this token hash, with its user."""
        rows = self._query(
            'SELECT u.*, s.csrf_token, s.expires_at FROM access_sessions s JOIN access_users u ON u.name = s."user"'
            " WHERE s.token_hash = ? AND s.expires_at > ?",
            (token_hash, now_ms),
        )
        if not rows:
            return None
        return SessionRow(_user(rows[0]), rows[0]["csrf_token"], rows[0]["expires_at"])

    def remove_session(self, token_hash: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM access_sessions WHERE token_hash = ?", (token_hash,))
