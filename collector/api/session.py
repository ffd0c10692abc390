"""The browser's session: log in with a user's password, see who is logged in, log out.

The session token travels in an HttpOnly, Secure, SameSite=Strict cookie; its anti-forgery token is in the
answer's body and in a cookie the pages' scripts can read, to be sent back in the ``X-CSRF-Token`` header
with every request that changes something.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from collector.access import Principal, Role
from collector.api.deps import CSRF_COOKIE, SESSION_COOKIE, AccessDep, Context, Now, Viewer
from collector.api.problems import Forbidden, Unauthorized, problem
from kilowatch.timebase import to_ms


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


class PrincipalOut(BaseModel):
    kind: str = Field(description="user (a browser session) or key (an API key)")
    name: str = Field(description="The user's name, or the key's id")
    role: Role
    sites: list[str] | None = Field(description="The sites it may see; null: every site")
    csrf_token: str | None = Field(
        description="A session's anti-forgery token, for the X-CSRF-Token header; null for an API key"
    )

    @classmethod
    def of(cls, principal: Principal) -> PrincipalOut:
        return cls(
            kind=principal.kind,
            name=principal.name,
            role=principal.role,
            sites=None if principal.sites is None else sorted(principal.sites),
            csrf_token=principal.csrf_token,
        )


router = APIRouter(prefix="/api/v1/session", tags=["session"])


@router.post("", responses={401: problem("Wrong user name or password")})
def login(body: LoginIn, access: AccessDep, context: Context, now: Now, response: Response) -> PrincipalOut:
    """Log in: sets the session cookie and the anti-forgery cookie."""
    lifetime = timedelta(hours=context.settings.session_hours)
    new = access.login(body.username, body.password, to_ms(now), lifetime // timedelta(milliseconds=1))
    if new is None:
        raise Unauthorized("wrong user name or password")
    secure, max_age = context.settings.cookie_secure, int(lifetime.total_seconds())
    response.set_cookie(
        SESSION_COOKIE, new.token, max_age=max_age, path="/", secure=secure, httponly=True, samesite="strict"
    )
    assert new.principal.csrf_token is not None
    response.set_cookie(
        CSRF_COOKIE, new.principal.csrf_token, max_age=max_age, path="/", secure=secure, samesite="strict"
    )
    return PrincipalOut.of(new.principal)


@router.get("", responses={401: problem("Not logged in")})
def whoami(principal: Viewer) -> PrincipalOut:
    """Who is calling: the session's user (with its anti-forgery token) or the API key."""
    return PrincipalOut.of(principal)


@router.delete("", status_code=204, responses={401: problem("Not logged in")})
def logout(principal: Viewer, request: Request, access: AccessDep, context: Context) -> Response:
    """End the session and clear its cookies (an API key has no session: it is revoked by an admin)."""
    token = request.cookies.get(SESSION_COOKIE)
    if principal.kind != "user" or token is None:
        raise Forbidden("only a browser session can log out; an API key is revoked by an admin")
    access.logout(token)
    response = Response(status_code=204)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(
            name,
            path="/",
            secure=context.settings.cookie_secure,
            httponly=name == SESSION_COOKIE,
            samesite="strict",
        )
    return response
