"""`kilowatch collector users ...` and `kilowatch collector keys ...`: who may use the API, in the ledger
named by the collector's config file. A key is printed once, when it is created; only its hash is kept."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from collector.access import Access, AccessError, Role
from collector.config import CollectorConfig
from kilowatch.cli_support import fail, load_config

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Collector configuration: the ledger it names holds users and keys"),
]
SiteOption = Annotated[
    list[str] | None,
    typer.Option("--site", "-s", help="A site it may see (repeat for more); not for an admin"),
]
AllSitesOption = Annotated[
    bool, typer.Option("--all-sites", help="It may see every site (not needed for an admin)")
]
RoleOption = Annotated[
    Role, typer.Option("--role", "-r", case_sensitive=False, help="admin, manager (acts on alerts) or viewer")
]

users = typer.Typer(no_args_is_help=True, help="Users who log in with a password (the web pages).")
keys = typer.Typer(
    no_args_is_help=True, help="API keys for integrators and scrapers (Authorization: Bearer)."
)


@contextmanager
def _access(config: Path) -> Iterator[Access]:
    settings = load_config(CollectorConfig, config)
    ledger = settings.ledger.location
    if isinstance(ledger, Path):
        ledger.parent.mkdir(parents=True, exist_ok=True)
    from collector.store.access import AccessStore  # numpy through the store: the collector's, not an agent's

    with AccessStore(ledger) as store:
        try:
            yield Access(store)
        except AccessError as exc:
            fail(str(exc))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _scope(role: Role, sites: list[str] | None, all_sites: bool) -> list[str] | None:
    if all_sites and sites:
        fail("give either --site or --all-sites, not both")
    return None if all_sites or (role is Role.ADMIN and not sites) else list(sites or [])


def _sites_text(sites: list[str] | None) -> str:
    return "every site" if sites is None else ", ".join(sites)


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin (for scripts)"),
]


@users.command("add")
def add_user(
    name: str,
    role: RoleOption = Role.VIEWER,
    site: SiteOption = None,
    all_sites: AllSitesOption = False,
    password_stdin: PasswordStdin = False,
    config: ConfigOption = Path("collector.yaml"),
) -> None:
    """Add a user; the password is asked for (twice) unless given on stdin."""
    with _access(config) as access:
        access.add_user(name, _password(password_stdin), role, _scope(role, site, all_sites), _now_ms())
    typer.echo(f"user {name} added")


@users.command("list")
def list_users(config: ConfigOption = Path("collector.yaml")) -> None:
    """Every user, with its role and sites."""
    with _access(config) as access:
        for user in access.store.users():
            typer.echo(f"{user.name}\t{user.role}\t{_sites_text(user.sites)}")


@users.command("remove")
def remove_user(name: str, config: ConfigOption = Path("collector.yaml")) -> None:
    """Remove a user and end its sessions."""
    with _access(config) as access:
        access.remove_user(name)
    typer.echo(f"user {name} removed")


@users.command("passwd")
def passwd(
    name: str, password_stdin: PasswordStdin = False, config: ConfigOption = Path("collector.yaml")
) -> None:
    """Set a user's password; its sessions end."""
    with _access(config) as access:
        access.set_password(name, _password(password_stdin))
    typer.echo(f"password of {name} changed")


@keys.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="What the key is for (e.g. the integrator's name)")],
    role: RoleOption = Role.VIEWER,
    site: SiteOption = None,
    all_sites: AllSitesOption = False,
    config: ConfigOption = Path("collector.yaml"),
) -> None:
    """Create a key and print it: this is the only time it is shown."""
    with _access(config) as access:
        key_id, key = access.create_key(name, role, _scope(role, site, all_sites), _now_ms())
    typer.echo(f"key {key_id} ({name}, {role.value}) created; it is shown only now:", err=True)
    typer.echo(key)


@keys.command("list")
def list_keys(config: ConfigOption = Path("collector.yaml")) -> None:
    """Every key (never the key itself): id, name, role, sites, revoked or not."""
    with _access(config) as access:
        for key in access.store.api_keys():
            state = "revoked" if key.revoked_at is not None else "active"
            typer.echo(f"{key.id}\t{key.name}\t{key.role}\t{_sites_text(key.sites)}\t{state}")


@keys.command("revoke")
def revoke_key(key_id: str, config: ConfigOption = Path("collector.yaml")) -> None:
    """Revoke a key at once: requests with it are refused from now on."""
    with _access(config) as access:
        access.revoke_key(key_id, _now_ms())
    typer.echo(f"key {key_id} revoked")
