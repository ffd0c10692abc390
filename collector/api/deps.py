"""What the routes are given, as ``Annotated`` aliases: the API's context (settings, metrics, the MQTT
connection's state), a ledger reader, the alert store, the clock, and who is calling.

Every route but ``/healthz`` and the login needs a principal: an API key (``Authorization: Bearer kw_...``)
or a browser session (the ``kw_session`` cookie; a request that changes something must then also carry the
session's anti-forgery token in the ``X-CSRF-Token`` header, which a page of another site cannot read).
Routers declare the least role they need (``dependencies=[Depends(viewer)]``), routes that change things
ask for :data:`Manager`; a route naming a site's resource checks it with :func:`require_site`, a list keeps
only the principal's sites.

The context and the alert store live in the app's lifespan state (:mod:`collector.api.app` opens the
store once, when the server starts, and closes it when it stops). A ledger reader is opened per request on
a read-only connection of its own (routes are plain ``def``, run in FastAPI's thread pool), so reads never
wait for ingestion.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, TypedDict

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPBearer

from collector.access import Access, Principal, Role
from collector.alerts import AlertStore
from collector.api.problems import Forbidden, Unauthorized
from collector.config import ApiSettings
from collector.detectors.config import Sites
from collector.metrics import CollectorMetrics
from collector.store import LedgerReader, Location
from kilowatch.timebase import to_ms


@dataclass(frozen=True)
class ApiContext:
    """What the routes need from the running collector."""

    ledger: Location
    """The ledger (a SQLite file or a PostgreSQL database)."""
    metrics: CollectorMetrics
    mqtt_connected: Callable[[], bool]
    settings: ApiSettings
    sites: Sites | None = None
    """The detection settings, when detection runs: sites' calendars and meters for the reports."""
    ledger_error: Callable[[], str | None] = lambda: None
    """Why ingestion is paused because the ledger cannot commit (a full disk); None while it commits."""


class ApiState(TypedDict):
    """The lifespan state every request sees."""

    context: ApiContext
    alerts: AlertStore
    access: Access


async def _context(request: Request) -> ApiContext:
    context = request.state.context
    assert isinstance(context, ApiContext)
    return context


async def _alerts(request: Request) -> AlertStore:
    store = request.state.alerts
    assert isinstance(store, AlertStore)
    return store


async def _access(request: Request) -> Access:
    access = request.state.access
    assert isinstance(access, Access)
    return access


def _reader(context: Annotated[ApiContext, Depends(_context)]) -> Iterator[LedgerReader]:
    with LedgerReader(context.ledger) as reader:
        yield reader


async def now() -> datetime:
    """The wall clock, in UTC (a dependency, so tests can fix it)."""
    return datetime.now(UTC)


Context = Annotated[ApiContext, Depends(_context)]
Reader = Annotated[LedgerReader, Depends(_reader)]
Alerts = Annotated[AlertStore, Depends(_alerts)]
Now = Annotated[datetime, Depends(now)]

SESSION_COOKIE = "kw_session"
"""The browser session's token: HttpOnly, Secure, SameSite=Strict."""
CSRF_COOKIE = "kw_csrf"
"""The session's anti-forgery token, readable by the pages' scripts (not HttpOnly)."""
CSRF_HEADER = "X-CSRF-Token"
"""Where a request that changes something by session sends the anti-forgery token."""
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Declared for the OpenAPI document (its security schemes); the checks are in `authenticated`.
_bearer = HTTPBearer(auto_error=False, description="An API key: `kilowatch collector keys create`")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="A browser session: POST /api/v1/session"
)


async def authenticated(
    request: Request,
    access: Annotated[Access, Depends(_access)],
    clock: Annotated[datetime, Depends(now)],
    _bearer_doc: Annotated[object, Depends(_bearer)],
    _cookie_doc: Annotated[object, Depends(_cookie)],
) -> Principal:
    """The caller, from its API key or its session; 401 without valid credentials, 403 when a session's
    request that changes something lacks its anti-forgery token.

    Async: the look-up is one primary-key read of microseconds, cheaper on the event loop than a trip
    through the thread pool (which every sync dependency makes)."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, key = authorization.partition(" ")
        principal = access.key_principal(key.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise Unauthorized("the API key is not valid (unknown, revoked or mistyped)")
        return principal
    token = request.cookies.get(SESSION_COOKIE)
    if token is None:
        raise Unauthorized("log in (POST /api/v1/session) or send an API key (Authorization: Bearer ...)")
    principal = access.session_principal(token, to_ms(clock))
    if principal is None:
        raise Unauthorized("the session has ended: log in again")
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        assert principal.csrf_token is not None
        if not hmac.compare_digest(sent.encode(), principal.csrf_token.encode()):
            raise Forbidden(f"the {CSRF_HEADER} header must carry the session's anti-forgery token")
    return principal


def _requiring(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def require(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if not principal.allows(role):
            raise Forbidden(f"a {principal.role.value} may not do this: it needs {role.value}")
        return principal

    return require


viewer = _requiring(Role.VIEWER)
manager = _requiring(Role.MANAGER)
admin = _requiring(Role.ADMIN)


async def every_site(principal: Annotated[Principal, Depends(viewer)]) -> Principal:
    """A viewer of every site: the Directive 20 reports sum units across the province's sites."""
    if principal.sites is not None:
        raise Forbidden("the province's reports need a key or user that sees every site")
    return principal


def require_site(principal: Principal, site: str) -> None:
    """403 unless `principal` may see `site`."""
    if not principal.sees(site):
        raise Forbidden(f"this {principal.kind} is not allowed on site {site!r}")


Viewer = Annotated[Principal, Depends(viewer)]
Manager = Annotated[Principal, Depends(manager)]
Admin = Annotated[Principal, Depends(admin)]
AccessDep = Annotated[Access, Depends(_access)]
