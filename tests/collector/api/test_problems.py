"""Every refusal of the collector's API is RFC 9457 problem details, and the OpenAPI document says so; the
app's lifespan opens what the routes share and closes it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.processes import wait_until
from collector.alerts import AlertStore
from collector.api.app import create_app
from collector.metrics import CollectorMetrics
from collector.store import Ledger, Location
from tests.alert_support import finding
from tests.api_support import api_client, api_key, open_connections
from tests.ledger_support import LedgerAt

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def ledger_path(ledger_at: LedgerAt) -> Location:
    path = ledger_at("kilowatch")
    with Ledger(path):
        pass
    return path


@pytest.fixture
async def client(ledger_path: Location) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ledger=ledger_path, metrics=CollectorMetrics(), mqtt_connected=lambda: True)
    async with api_client(app, ledger_path) as client:
        yield client


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/api/v1/alerts/7", "no alert with id 7"),
        ("/api/v1/meters/nope/latest", "unknown meter 'nope'"),
        ("/api/v1/nothing-here", "Not Found"),
    ],
)
async def test_not_found_is_a_404_problem(client: httpx.AsyncClient, path: str, detail: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert problem(response) == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": detail,
        "instance": path,
    }


async def test_a_wrong_method_keeps_its_allow_header(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/meters")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert problem(response)["title"] == "Method Not Allowed"


async def test_a_second_acknowledgement_is_a_409_problem(
    client: httpx.AsyncClient, ledger_path: Location
) -> None:
    with AlertStore(ledger_path) as store:
        alert_id = store.apply(finding()).alert.id
    assert (await client.post(f"/api/v1/alerts/{alert_id}/ack")).status_code == 200
    again = await client.post(f"/api/v1/alerts/{alert_id}/ack")
    assert again.status_code == 409
    assert problem(again) == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": f"alert {alert_id} is already acknowledged",
        "instance": f"/api/v1/alerts/{alert_id}/ack",
    }


async def test_invalid_parameters_are_one_422_problem_listing_each(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/alerts", params={"limit": "0", "from": "2024-05-01T10:00:00"})
    assert response.status_code == 422
    body = problem(response)
    assert (body["type"], body["title"], body["status"]) == ("about:blank", "Unprocessable Entity", 422)
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["query", "from"], "timezone_aware"),
        (["query", "limit"], "greater_than_equal"),
    ]
    first, second = body["errors"]
    assert body["detail"] == f"query.from: {first['msg']}; query.limit: {second['msg']}"


async def test_an_invalid_body_is_a_422_problem(client: httpx.AsyncClient, ledger_path: Location) -> None:
    with AlertStore(ledger_path) as store:
        alert_id = store.apply(finding()).alert.id
    response = await client.post(f"/api/v1/alerts/{alert_id}/silence", json={"until": "2099-01-01T00:00Z"})
    assert response.status_code == 422
    body = problem(response)
    assert body["errors"] == [{"loc": ["body", "reason"], "msg": "Field required", "type": "missing"}]
    assert body["detail"] == "body.reason: Field required"


@pytest.mark.parametrize("path", ["/api/v1/meters/m1/intervals", "/api/v1/alerts"])
async def test_a_range_that_ends_before_it_starts_is_the_same_422_problem_everywhere(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, params={"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"})
    assert response.status_code == 422
    assert problem(response) == {
        "type": "about:blank",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": "'from' (2024-05-02T00:00:00+00:00) must be before 'to' (2024-05-01T00:00:00+00:00)",
        "instance": path,
    }


async def test_a_range_too_long_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/meters/m1/intervals", params={"from": "2024-01-01T00:00:00Z", "to": "2024-05-01T00:00:00Z"}
    )
    assert response.status_code == 422
    assert problem(response)["detail"] == "the range is longer than 31 days; ask in pieces"


async def test_openapi_declares_every_error_as_a_problem(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert {"Problem", "FieldError"} <= schemas.keys()
    assert schemas["Problem"]["required"] == ["title", "status", "detail"]
    assert "HTTPValidationError" not in json.dumps(document)
    errors = {
        (path, method, status): response["content"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if status.startswith("4")
    }
    assert ("/api/v1/meters/{meter_id}/latest", "get", "404") in errors
    assert ("/api/v1/alerts/{alert_id}/ack", "post", "409") in errors
    assert ("/api/v1/alerts", "get", "422") in errors
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert all(content == problem_content for content in errors.values()), errors


async def test_the_lifespan_opens_the_alert_and_access_stores_once_and_closes_them(
    ledger_path: Location,
) -> None:
    app = create_app(ledger=ledger_path, metrics=CollectorMetrics(), mqtt_connected=lambda: True)
    headers = {"Authorization": f"Bearer {api_key(ledger_path)}"}

    def connections(n: int) -> None:
        """Wait for `n` open connections: a PostgreSQL session ends a moment after its client closed it."""
        wait_until(lambda: open_connections(ledger_path) == n, 10, f"{n} open connections")

    connections(0)
    async with LifespanManager(app) as manager:
        connections(2)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://collector", headers=headers
        ) as client:
            assert (await client.get("/api/v1/alerts")).json() == []
            assert (await client.get("/api/v1/alerts")).json() == []
        connections(2)
    connections(0)


async def test_an_unexpected_error_is_a_500_problem_that_reveals_nothing(ledger_path: Location) -> None:
    app = create_app(ledger=ledger_path, metrics=CollectorMetrics(), mqtt_connected=lambda: True)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("/var/lib/secret.db: no such table: readings")

    async with api_client(app, ledger_path) as client:
        response = await client.get("/boom")
    assert (response.status_code, response.headers["content-type"]) == (500, PROBLEM_JSON)
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "the collector failed to answer; see its log",
        "instance": "/boom",
    }
