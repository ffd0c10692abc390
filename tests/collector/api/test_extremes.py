"""Extreme parameters answer 4xx problem details, never a 500 (issue 16, finding 10)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from collector.api.app import create_app
from collector.detectors.config import Sites
from collector.metrics import CollectorMetrics
from collector.store import Ledger
from tests.api_support import api_client
from tests.ledger_support import LedgerAt

PROBLEM_JSON = "application/problem+json"
BIG = str(2**63)


@pytest.fixture
async def client(ledger_at: LedgerAt) -> AsyncIterator[httpx.AsyncClient]:
    path = ledger_at("kilowatch")
    with Ledger(path):
        pass
    sites = Sites.model_validate({"sites": {"s": {"meters": {"m": {"role": "sub_meter", "rated_kw": 10}}}}})
    app = create_app(ledger=path, metrics=CollectorMetrics(), mqtt_connected=lambda: True, sites=sites)
    async with api_client(app, path) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/v1/meters/m/intervals?to=0001-01-01T00:00:00Z"),
        ("GET", "/api/v1/meters/m/intervals?from=9999-12-30T00:00:00Z"),
        ("GET", "/api/v1/meters/m/intervals?from=9999-12-30T00:00:00Z&to=9999-12-31T23:59:59Z"),
        ("GET", "/api/v1/meters/m/intervals?to=0"),
        ("GET", "/api/v1/meters/m/intervals?from=1700000000000"),
        ("GET", "/api/v1/meters/m/intervals?to=1e3"),
        ("GET", "/api/v1/sites/s/report?day=9999-12-31"),
        ("GET", "/api/v1/sites/s/report?day=0001-01-01"),
        ("GET", "/api/v1/sites/s/report?day=20260101"),
        ("GET", f"/api/v1/alerts?before={BIG}"),
        ("GET", "/api/v1/alerts?to=0"),
        ("GET", "/api/v1/alerts?from=0001-01-01T00:00:00Z"),
        ("GET", f"/api/v1/alerts/{BIG}"),
        ("GET", "/api/v1/alerts/0"),
        ("POST", f"/api/v1/alerts/{2**70}/ack"),
        ("POST", f"/api/v1/alerts/{2**70}/silence"),
    ],
)
async def test_extreme_input_is_a_4xx_problem(client: httpx.AsyncClient, method: str, url: str) -> None:
    body = {"until": "9999-12-31T23:59:59Z", "reason": "x"} if url.endswith("silence") else None
    response = await client.request(method, url, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["status"] == response.status_code
    assert isinstance(problem["detail"], str)
    assert problem["detail"]


async def test_a_bare_number_is_refused_with_the_reason(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/meters/m/intervals?to=0")
    assert response.status_code == 422
    assert "bare number is not a time" in response.json()["detail"]


async def test_ordinary_times_still_pass(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/meters/m/intervals?from=2026-01-01T00:00:00%2B07:00&to=2026-01-02T00:00:00Z"
    )
    assert response.status_code == 404  # the meter has sent nothing: the range itself was accepted
    assert response.json()["detail"] == "unknown meter 'm'"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/api/v1/meters/m%00/latest", None),
        ("GET", "/api/v1/alerts?meter=m%00", None),
        ("POST", "/api/v1/session", {"username": "admin\x00", "password": "x"}),
    ],
)
async def test_a_nul_character_is_never_a_500(
    client: httpx.AsyncClient, backend: str, method: str, url: str, body: dict[str, str] | None
) -> None:
    """SQLite holds and compares a NUL (nothing matches: 404, 401, an empty list); PostgreSQL's text cannot,
    and the request is refused as unprocessable instead of failing the server."""
    response = await client.request(method, url, json=body)
    assert response.status_code < 500, response.text
    if backend == "postgresql":
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
