"""The API's errors and their one mapping to RFC 9457 problem details (``application/problem+json``).

Routes raise an :class:`ApiError` subclass; FastAPI's own refusals (an unknown path, a wrong method, a
parameter or body that does not validate) arrive as ``HTTPException`` and ``RequestValidationError``. All
three become a :class:`Problem`: ``type`` is ``about:blank`` (the status says what kind of problem it is, so
``title`` is the status phrase), ``detail`` is one sentence for a person, ``instance`` the path asked for,
and a validation problem lists each invalid field in the extension member ``errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema, models_json_schema
from starlette.exceptions import HTTPException

from collector.store import UnstorableValue

PROBLEM_JSON = "application/problem+json"
_SCHEMAS = "#/components/schemas/"


class ApiError(Exception):
    """A request the API refuses; the subclass says with which status, the message says why."""

    status = HTTPStatus.BAD_REQUEST


class Unauthorized(ApiError):
    """No credentials, or credentials that are not valid (an unknown or revoked key, an expired session)."""

    status = HTTPStatus.UNAUTHORIZED


class Forbidden(ApiError):
    """Valid credentials whose role or sites do not allow the request (or a missing anti-forgery token)."""

    status = HTTPStatus.FORBIDDEN


class NotFound(ApiError):
    """What the request names does not exist (a meter, an alert, a site)."""

    status = HTTPStatus.NOT_FOUND


class Conflict(ApiError):
    """What the request names is not in a state that allows it (an alert already acknowledged)."""

    status = HTTPStatus.CONFLICT


class Unprocessable(ApiError):
    """The request is well formed but asks for something that makes no sense (a silence in the past)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY


class InvalidRange(Unprocessable):
    """A `from`/`to` time range the API refuses."""


def require_order(start: datetime, end: datetime) -> None:
    """Refuse a range whose `from` is not before its `to`: the one rule of every ranged query."""
    if start >= end:
        raise InvalidRange(f"'from' ({start.isoformat()}) must be before 'to' ({end.isoformat()})")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: `query`, `path` or `body`, then the parameter or field")
    msg: str = Field(description="What is wrong with it")
    type: str = Field(description="The kind of error (pydantic's error type)")


class Problem(BaseModel):
    """An error response, as RFC 9457 problem details."""

    type: str = Field("about:blank", description="The problem type; about:blank: the status says it all")
    title: str = Field(description="The HTTP status phrase")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong, for a person")
    instance: str | SkipJsonSchema[None] = Field(None, description="The path of the request that failed")
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        None, description="Only for an invalid request: each parameter or field that is invalid"
    )


def problem(description: str) -> dict[str, Any]:
    """An OpenAPI response (for a route's ``responses``) that is a :class:`Problem`."""
    return {"description": description, "content": {PROBLEM_JSON: {"schema": {"$ref": _SCHEMAS + "Problem"}}}}


def _response(
    request: Request,
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": 'Bearer realm="kilowatch"'} if isinstance(exc, Unauthorized) else None
    return _response(request, exc.status, str(exc), headers=headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug or an unavailable resource, answered without its message or traceback (they may name files,
    SQL or settings). Starlette re-raises the exception after this answer, so the server logs it."""
    return _response(request, HTTPStatus.INTERNAL_SERVER_ERROR, "the collector failed to answer; see its log")


async def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    """Text the ledger cannot hold (a NUL character on PostgreSQL) is the request's fault, not the server's."""
    return _response(
        request,
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "the request holds a value the ledger cannot hold or compare",
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _response(request, exc.status_code, str(exc.detail), headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [FieldError(loc=list(e["loc"]), msg=e["msg"], type=e["type"]) for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)
    return _response(request, HTTPStatus.UNPROCESSABLE_ENTITY, detail, errors=errors)


def install(app: FastAPI) -> None:
    """Answer every refusal of `app` with problem details."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for unstorable in UnstorableValue:
        app.add_exception_handler(unstorable, _unstorable_value)
    app.add_exception_handler(Exception, _internal_error)


def document(openapi: dict[str, Any]) -> None:
    """Declare the problem schemas in an OpenAPI document, FastAPI's default validation response (which it
    adds to every route with parameters) as a problem too, and 401 and 403 on every route that needs
    credentials."""
    _, defs = models_json_schema([(Problem, "serialization")], ref_template=_SCHEMAS + "{model}")
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs["$defs"])
    fastapi_default = {"schema": {"$ref": _SCHEMAS + "HTTPValidationError"}}
    for operations in openapi["paths"].values():
        for operation in operations.values():
            if operation.get("security"):
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", problem("No valid credentials (API key or session)"))
                responses.setdefault("403", problem("The credentials' role or sites do not allow it"))
            for response in operation.get("responses", {}).values():
                if response.get("content") == {"application/json": fastapi_default}:
                    response.update(problem("The request is invalid: see `errors`"))
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
