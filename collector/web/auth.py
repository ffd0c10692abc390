"""Who is looking at a page: the user of the browser's session (the API's ``kw_session`` cookie, checked by
the API's :class:`~collector.access.Access`); a visitor without one is sent to the login page.

Pages only read (GET). What changes something (log in, log out, acknowledge, silence) is sent by the page's
script to the API's own routes, with the session's anti-forgery token in their ``X-CSRF-Token`` header:
the same rules for the web app as for any API client.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from collector.access import Principal
from collector.api.deps import SESSION_COOKIE, AccessDep, Now
from kilowatch.timebase import to_ms


class LoginRequired(Exception):
    """No session, or one that has ended: the page answers with the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def _session_user(request: Request, access: AccessDep, now: Now) -> Principal:
    token = request.cookies.get(SESSION_COOKIE)
    principal = None if token is None else access.session_principal(token, to_ms(now))
    if principal is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(here)
    return principal


async def _to_login(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/login?{urlencode({'next': exc.next_url})}", status_code=303)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoginRequired, _to_login)


def safe_next(url: str | None) -> str:
    """Where to go after logging in: a path of this site only (never another host's address)."""
    return url if url and url.startswith("/") and not url.startswith("//") and "\\" not in url else "/"


SessionUser = Annotated[Principal, Depends(_session_user)]
