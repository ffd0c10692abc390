"""Who may do what: users (a password, for the browser) and API keys (for integrators), each with a role
and the sites it is scoped to; browser sessions; the secrets and their hashes.

Passwords are hashed with argon2id (argon2-cffi: memory-hard, salted, parameters stored in the hash, the
first choice of OWASP's password storage guidance); checking one costs tens of milliseconds, which is
what makes guessing slow. API keys and session tokens are 256-bit random secrets, so nobody can guess
them however fast the hash is: they are stored as SHA-256 digests, which keeps the check on every request
at microseconds (a slow hash there would cost every API call what a login costs).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

KEY_PREFIX = "kw_"
"""API keys read ``kw_<id>_<secret>``: the id finds the row, the secret is checked against its hash."""


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2 is imported on first use: the `kilowatch` command of an agent-only install imports this
    module (the collector's CLI) without the collector's dependencies."""
    from argon2 import PasswordHasher

    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user is unknown, so that a login takes as long whether the name exists or not."""
    return _hasher().hash("no such user")


if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from collector.store.access import AccessStore, KeyRow, UserRow


class Role(StrEnum):
    """What a principal may do, on the sites it is scoped to."""

    ADMIN = "admin"
    """Everything, on every site."""
    MANAGER = "manager"
    """Read, and act on alerts (acknowledge, silence)."""
    VIEWER = "viewer"
    """Read only (people and integrators)."""


_RANK = {Role.VIEWER: 0, Role.MANAGER: 1, Role.ADMIN: 2}


class AccessError(Exception):
    """A user or key operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user by session or an API key, with its role and sites."""

    kind: Literal["user", "key"]
    name: str
    """The user's name, or the key's id."""
    role: Role
    sites: frozenset[str] | None
    """The sites it may see; None: every site."""
    csrf_token: str | None = None
    """A session's anti-forgery token (None for an API key, which the browser never sends by itself)."""

    def allows(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def sees(self, site: str) -> bool:
        return self.sites is None or site in self.sites


def _scope(role: Role, sites: Iterable[str] | None) -> list[str] | None:
    """The sites to store: None (every site) for an admin; refuse a scoped role without sites."""
    if role is Role.ADMIN:
        if sites:
            raise AccessError("an admin sees every site: give no --site")
        return None
    if sites is None:
        return None
    scoped = sorted(set(sites))
    if not scoped:
        raise AccessError(f"a {role.value} needs at least one --site (or --all-sites)")
    return scoped


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _principal(kind: Literal["user", "key"], row: UserRow | KeyRow, csrf: str | None = None) -> Principal:
    from collector.store.access import KeyRow  # at first use: see _hasher

    name = row.id if isinstance(row, KeyRow) else row.name
    sites = None if row.sites is None else frozenset(row.sites)
    return Principal(kind=kind, name=name, role=Role(row.role), sites=sites, csrf_token=csrf)


@dataclass(frozen=True)
class NewSession:
    token: str
    """The cookie's value: shown to the browser once, stored only as a hash."""
    principal: Principal


class Access:
    """Users, keys and sessions over an :class:`AccessStore`; times are UTC ms given by the caller."""

    def __init__(self, store: AccessStore) -> None:
        self.store = store

    # Users

    def add_user(
        self, name: str, password: str, role: Role, sites: Iterable[str] | None, now_ms: int
    ) -> None:
        if not name or not password:
            raise AccessError("a user needs a name and a password")
        if not self.store.add_user(name, role.value, _scope(role, sites), _hasher().hash(password), now_ms):
            raise AccessError(f"user {name!r} exists already")

    def remove_user(self, name: str) -> None:
        if not self.store.remove_user(name):
            raise AccessError(f"no user {name!r}")

    def set_password(self, name: str, password: str) -> None:
        if not password:
            raise AccessError("the password is empty")
        if not self.store.set_password(name, _hasher().hash(password)):
            raise AccessError(f"no user {name!r}")

    # Keys

    def create_key(self, name: str, role: Role, sites: Iterable[str] | None, now_ms: int) -> tuple[str, str]:
        """A new key: (its id, the key itself, to be shown once)."""
        scoped = _scope(role, sites)
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        self.store.add_key(key_id, name, role.value, scoped, _digest(secret), now_ms)
        return key_id, f"{KEY_PREFIX}{key_id}_{secret}"

    def revoke_key(self, key_id: str, now_ms: int) -> None:
        if not self.store.revoke_key(key_id, now_ms):
            raise AccessError(f"no key {key_id!r} that is not revoked already")

    def key_principal(self, key: str) -> Principal | None:
        """The principal of an unrevoked key; None for anything else."""
        key_id, sep, secret = key.removeprefix(KEY_PREFIX).partition("_")
        if not key.startswith(KEY_PREFIX) or not sep:
            return None
        row = self.store.key(key_id)
        if (
            row is None
            or row.revoked_at is not None
            or not hmac.compare_digest(row.secret_hash, _digest(secret))
        ):
            return None
        return _principal("key", row)

    # Sessions

    def login(self, name: str, password: str, now_ms: int, lifetime_ms: int) -> NewSession | None:
        """A new session if the password is the user's; None otherwise (in the same time either way)."""
        user = self.store.user(name)
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            _hasher().verify(user.password_hash if user else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.store.add_session(_digest(token), user.name, csrf, now_ms, now_ms + lifetime_ms)
        return NewSession(token, _principal("user", user, csrf))

    def session_principal(self, token: str, now_ms: int) -> Principal | None:
        """The principal of an unexpired session; None for anything else."""
        row = self.store.session(_digest(token), now_ms)
        return None if row is None else _principal("user", row.user, row.csrf_token)

    def logout(self, token: str) -> None:
        self.store.remove_session(_digest(token))
