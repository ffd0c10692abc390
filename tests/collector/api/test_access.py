"""Access control: every route of the live OpenAPI document refuses the anonymous, a wrong or revoked key and
a key of another site; roles; browser sessions with their anti-forgery token; secrets in no log or answer;
the users and keys commands."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from collector.access import Access, Role
from collector.alerts import AlertStore
from collector.api.app import create_app
from collector.cli import app as collector_cli
from collector.config import ApiSettings
from collector.detectors.config import MeterConfig, SiteConfig, Sites
from collector.detectors.config import Role as MeterRole
from collector.metrics import CollectorMetrics
from collector.store import Ledger, Location, Postgres
from collector.store.access import AccessStore
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    ClockState,
    GatewayEvent,
    GatewayEventKind,
    GatewayState,
    GatewayStatus,
)
from tests.alert_support import finding
from tests.api_support import api_client, api_key
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt

SITE = "site-a"
METER = "meter-a"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test user's
OPEN = {("/healthz", "get"), ("/api/v1/session", "post")}
"""The routes anyone may call: health, and logging in."""


@pytest.fixture
def ledger(ledger_at: LedgerAt) -> Location:
    """A ledger with one of everything, all on `SITE`: meter, readings, a quarantined reading, a missing
    batch, a gateway's status and event, an alert; and a manager user of `SITE`."""
    path = ledger_at("kilowatch")
    with Ledger(path) as ledger:
        spool = {"spool_id": "0123abcd"}
        for seq, clock in ((1, ClockState.SYNCED), (5, ClockState.SYNCED), (6, ClockState.UNSYNCED)):
            message = batch(reading(at(9 + seq), meter=METER, imp=seq, clock=clock), site=SITE, seq=seq)
            ledger.ingest(message.model_copy(update=spool))
        common = {"schema_version": SCHEMA_VERSION, "site": SITE, "gateway": "gw1", "ts": at(12)}
        ledger.record_status(
            GatewayStatus(**common, state=GatewayState.ONLINE, agent_version="0.2.0"), received_at=at(12)
        )
        event = GatewayEvent(**common, kind=GatewayEventKind.SPOOL_EVICTED, readings=3, detail="evicted")
        ledger.store([event], received_at=at(12))
    with AlertStore(path) as store:
        store.apply(finding(site=SITE, meter=METER))
    with AccessStore(path) as store:
        Access(store).add_user("mai", PASSWORD, Role.MANAGER, [SITE], 0)
    return path


SITES = Sites(sites={SITE: SiteConfig(meters={METER: MeterConfig(role=MeterRole.SUB_METER, rated_kw=10)})})


def make_app(ledger: Location, settings: ApiSettings | None = None) -> Any:
    return create_app(
        ledger=ledger,
        metrics=CollectorMetrics(),
        mqtt_connected=lambda: True,
        sites=SITES,
        settings=settings,
    )


@pytest.fixture
async def client(ledger: Location) -> AsyncIterator[httpx.AsyncClient]:
    """A client without credentials."""
    async with api_client(make_app(ledger)) as client:
        yield client


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if (path, method) not in OPEN
    ]


async def call(
    client: httpx.AsyncClient, path: str, method: str, operation: dict[str, Any], key: str | None
) -> httpx.Response:
    """`operation` with its path parameters naming `SITE`'s things, and a valid body if it takes one."""
    values = {"meter_id": METER, "alert_id": "1", "site": SITE}
    url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
    body = {"until": "2099-01-01T00:00:00Z", "reason": "r"} if "requestBody" in operation else None
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return await client.request(method, url, json=body, headers=headers)


async def test_every_route_refuses_anonymous_wrong_revoked_and_other_site_callers(
    client: httpx.AsyncClient, ledger: Location
) -> None:
    document = (
        await client.get("/openapi.json", headers={"Authorization": f"Bearer {api_key(ledger)}"})
    ).json()
    found = operations(document)
    assert len(found) >= 14, found  # the walk sees the routes (not an empty document)
    with AccessStore(ledger) as store:
        access = Access(store)
        revoked_id, revoked = access.create_key("old", Role.ADMIN, None, 0)
        access.revoke_key(revoked_id, 0)
    other_site = {role: api_key(ledger, role, ["site-b"]) for role in (Role.VIEWER, Role.MANAGER)}
    own = api_key(ledger, Role.ADMIN)
    leaks = []
    for path, method, operation in found:
        for key in (None, "kw_0000_wrong", "not-a-key", revoked, own.replace(own[-4:], "AAAA")):
            response = await call(client, path, method, operation, key)
            assert response.status_code == 401, (path, method, key, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
        for key in other_site.values():
            response = await call(client, path, method, operation, key)
            if response.status_code == 200:  # a list: filtered to the key's sites, so nothing of SITE
                if SITE in response.text or METER in response.text:
                    leaks.append((path, method, response.text))
            else:
                assert response.status_code == 403, (path, method, response.text)
        mine = await call(client, path, method, operation, own)
        assert mine.status_code < 500, (path, method, mine.text)
        if method == "get" and mine.status_code == 200 and path != "/metrics" and "session" not in path:
            assert SITE in mine.text or METER in mine.text, (
                path,
                "the walk must see data to see it withheld",
            )
    assert not leaks, leaks


async def test_a_cookie_without_session_and_the_openapi_document_itself_are_refused(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/api/v1/meters", headers={"Cookie": "kw_session=forged"})).status_code == 401
    assert (await client.get("/openapi.json")).status_code == 401
    assert (await client.get("/docs")).status_code == 401
    assert (await client.get("/healthz")).status_code == 200


async def test_roles_viewer_reads_manager_acts_on_its_own_site(
    client: httpx.AsyncClient, ledger: Location
) -> None:
    viewer = {"Authorization": f"Bearer {api_key(ledger, Role.VIEWER, [SITE])}"}
    manager = {"Authorization": f"Bearer {api_key(ledger, Role.MANAGER, [SITE, 'site-b'])}"}
    assert (await client.get("/api/v1/alerts/1", headers=viewer)).status_code == 200
    refused = await client.post("/api/v1/alerts/1/ack", headers=viewer)
    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        "a viewer may not do this: it needs manager",
    )
    assert (await client.post("/api/v1/alerts/1/ack", headers=manager)).json()["status"] == "acknowledged"
    [meter] = (await client.get("/api/v1/meters", headers=manager)).json()
    assert meter["id"] == METER
    metrics = await client.get("/metrics", headers=manager)
    assert (metrics.status_code, metrics.json()["detail"]) == (
        403,
        "/metrics needs a key or user that sees every site",
    )


async def test_metrics_may_be_open_by_setting(ledger: Location) -> None:
    async with api_client(make_app(ledger, ApiSettings(metrics_auth="none"))) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/api/v1/meters")).status_code == 401


async def test_session_login_csrf_and_logout(client: httpx.AsyncClient) -> None:
    wrong = await client.post("/api/v1/session", json={"username": "mai", "password": "guess"})
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "wrong user name or password")
    nobody = await client.post("/api/v1/session", json={"username": "nobody", "password": "guess"})
    assert nobody.status_code == 401
    login = await client.post("/api/v1/session", json={"username": "mai", "password": PASSWORD})
    assert login.status_code == 200, login.text
    body = login.json()
    assert body | {"csrf_token": None} == {
        "kind": "user", "name": "mai", "role": "manager", "sites": [SITE], "csrf_token": None,
    }  # fmt: skip
    cookies = {c.split("=", 1)[0]: c.lower() for c in login.headers.get_list("set-cookie")}
    assert {"kw_session", "kw_csrf"} == set(cookies)
    for name, attributes in cookies.items():
        assert {"secure", "samesite=strict", "path=/"} <= {a.strip() for a in attributes.split(";")}
        assert ("httponly" in attributes) is (name == "kw_session")
    assert client.cookies["kw_csrf"] == body["csrf_token"]
    assert PASSWORD not in login.text

    assert (await client.get("/api/v1/meters")).status_code == 200
    assert (await client.get("/api/v1/session")).json() == body
    forged = await client.post("/api/v1/alerts/1/ack")
    assert (forged.status_code, forged.json()["detail"]) == (
        403, "the X-CSRF-Token header must carry the session's anti-forgery token",
    )  # fmt: skip
    wrong_token = await client.post("/api/v1/alerts/1/ack", headers={"X-CSRF-Token": "x" * 43})
    assert wrong_token.status_code == 403
    csrf = {"X-CSRF-Token": body["csrf_token"]}
    assert (await client.post("/api/v1/alerts/1/ack", headers=csrf)).status_code == 200
    assert (await client.delete("/api/v1/session")).status_code == 403  # logging out is a change too
    assert (await client.delete("/api/v1/session", headers=csrf)).status_code == 204
    assert "kw_session" not in client.cookies
    assert (
        await client.get("/api/v1/meters", headers={"Cookie": f"kw_session={login.cookies['kw_session']}"})
    ).status_code == 401


async def test_a_password_change_or_removal_ends_the_users_sessions(
    client: httpx.AsyncClient, ledger: Location
) -> None:
    await client.post("/api/v1/session", json={"username": "mai", "password": PASSWORD})
    assert (await client.get("/api/v1/meters")).status_code == 200
    with AccessStore(ledger) as store:
        Access(store).set_password("mai", "new password")
    assert (await client.get("/api/v1/meters")).status_code == 401
    await client.post("/api/v1/session", json={"username": "mai", "password": "new password"})
    assert (await client.get("/api/v1/meters")).status_code == 200
    with AccessStore(ledger) as store:
        Access(store).remove_user("mai")
    assert (await client.get("/api/v1/meters")).status_code == 401


async def test_secrets_are_in_no_log_and_no_answer(
    client: httpx.AsyncClient, ledger: Location, caplog: pytest.LogCaptureFixture
) -> None:
    key = api_key(ledger)
    secret = key.partition("_")[2].partition("_")[2]
    caplog.set_level(logging.DEBUG)
    answers = [
        await client.get("/api/v1/meters", headers={"Authorization": f"Bearer {key}"}),
        await client.get("/api/v1/meters", headers={"Authorization": f"Bearer {key}x"}),
        await client.get("/api/v1/session", headers={"Authorization": f"Bearer {key}"}),
        await client.post("/api/v1/session", json={"username": "mai", "password": PASSWORD}),
        await client.post("/api/v1/session", json={"username": "mai", "password": PASSWORD + "x"}),
    ]
    session = answers[3].cookies["kw_session"]
    for text in [caplog.text, *(a.text for a in answers)]:
        assert secret not in text
        assert PASSWORD not in text
        assert session not in text
    with AccessStore(ledger) as store:
        stored = [*(k.secret_hash for k in store.api_keys()), *(u.password_hash for u in store.users())]
    assert not any(secret in h or PASSWORD in h or session in h for h in stored)
    assert all(h.startswith("$argon2id$") for h in stored[-1:])


def test_users_and_keys_commands(tmp_path: Path, ledger_at: LedgerAt) -> None:
    where = ledger_at("kilowatch")
    config = tmp_path / "collector.yaml"
    ledger = {"url": where.url} if isinstance(where, Postgres) else {"path": str(where)}
    config.write_text(json.dumps({"ledger": ledger}))  # JSON is YAML
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> str:
        result = runner.invoke(collector_cli, [*args, "--config", str(config)], input=stdin)
        assert result.exit_code == 0, result.output
        return result.stdout

    run("users", "add", "an", "--role", "admin", "--password-stdin", stdin="pw-one\n")
    run(
        "users",
        "add",
        "binh",
        "--role",
        "viewer",
        "--site",
        "s1",
        "--site",
        "s2",
        "--password-stdin",
        stdin="pw\n",
    )
    assert run("users", "list") == "an\tadmin\tevery site\nbinh\tviewer\ts1, s2\n"
    refused = runner.invoke(collector_cli, ["users", "add", "chi", "--role", "manager", "--password-stdin",
                                            "--config", str(config)], input="pw\n")  # fmt: skip
    assert refused.exit_code == 1
    assert "a manager needs at least one --site (or --all-sites)" in refused.output
    run("users", "passwd", "an", "--password-stdin", stdin="pw-two\n")
    run("users", "remove", "binh")
    assert run("users", "list") == "an\tadmin\tevery site\n"

    key = run("keys", "create", "grafana", "--role", "viewer", "--all-sites").strip()
    assert re.fullmatch(r"kw_[0-9a-f]{8}_[\w-]{43}", key), key
    key_id = key.split("_")[1]
    listed = run("keys", "list")
    assert listed == f"{key_id}\tgrafana\tviewer\tevery site\tactive\n"
    assert key.split("_", 2)[2] not in listed
    run("keys", "revoke", key_id)
    assert run("keys", "list").endswith("\trevoked\n")
    again = runner.invoke(collector_cli, ["keys", "revoke", key_id, "--config", str(config)])
    assert again.exit_code == 1
    with AccessStore(where) as store:
        access = Access(store)
        assert access.key_principal(key) is None
        assert access.login("an", "pw-two", 0, 1000) is not None
