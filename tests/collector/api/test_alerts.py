"""The alerts API on a real SQLite ledger file, through httpx's ASGI transport into the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from collector.alerts import AlertStore
from collector.api.app import create_app
from collector.detectors.findings import Detector
from collector.metrics import CollectorMetrics
from tests.alert_support import FakeClock, finding, open_store
from tests.api_support import api_client
from tests.collector_support import at
from tests.ledger_support import LedgerAt


@pytest.fixture
def store(ledger_at: LedgerAt) -> Iterator[AlertStore]:
    with open_store(ledger_at("kilowatch"), FakeClock(at(19, 31))) as store:
        yield store


@pytest.fixture
async def client(store: AlertStore, ledger_at: LedgerAt) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ledger=ledger_at("kilowatch"), metrics=CollectorMetrics(), mqtt_connected=lambda: True)
    async with api_client(app, ledger_at("kilowatch")) as client:
        yield client


async def test_lists_alerts_with_cost_messages_and_utc_times(
    client: httpx.AsyncClient, store: AlertStore
) -> None:
    assert (await client.get("/api/v1/alerts")).json() == []
    alert = store.apply(finding(wasted_kwh=3.0)).alert
    [body] = (await client.get("/api/v1/alerts")).json()
    assert body == {
        "id": alert.id,
        "site": "site1",
        "meter": "m1",
        "detector": "after_hours",
        "rule": "R4",
        "status": "open",
        "start": "2024-05-01T19:00:00Z",
        "end": None,
        "detected_at": "2024-05-01T19:30:00Z",
        "raised_at": "2024-05-01T19:31:00Z",
        "raised_late": False,
        "last_seen": "2024-05-01T19:30:00Z",
        "count": 1,
        "wasted_kwh": 3.0,
        "cost_vnd": 6000.0,
        "magnitude": 6.0,
        "message_vi": "6 kW vẫn chạy ngoài giờ làm việc. Lãng phí 3.0 kWh, khoảng 6.000 đồng.",
        "message_en": "6 kW left on after hours. Wasted 3.0 kWh, about 6,000 VND.",
        "acknowledged_at": None,
        "silenced_until": None,
        "silence_reason": None,
        "resolved_at": None,
    }
    assert (await client.get(f"/api/v1/alerts/{alert.id}")).json() == body


async def test_filters_and_pages(client: httpx.AsyncClient, store: AlertStore) -> None:
    first = store.apply(finding(start_ms=at(1), end_ms=at(2))).alert.id
    second = store.apply(finding(meter="m2", site="site2", start_ms=at(10))).alert.id
    third = store.apply(finding(meter="m3", detector=Detector.IDLE, rule="R10", start_ms=at(18))).alert.id

    async def ids(query: str) -> list[int]:
        response = await client.get(f"/api/v1/alerts?{query}")
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()]

    assert await ids("") == [third, second, first]
    assert await ids("status=resolved") == [first]
    assert await ids("status=open&site=site1") == [third]
    assert await ids("detector=idle") == [third]
    assert await ids("meter=m2") == [second]
    assert await ids("from=2024-05-01T10:00:00%2B07:00&to=2024-05-01T12:00:00Z") == [second]
    assert await ids("limit=2") == [third, second]
    assert await ids(f"limit=2&before={second}") == [first]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("status=closed", "status"),
        ("detector=smoke", "detector"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("from=2024-05-01T10:00:00", "from"),
    ],
)
async def test_bad_queries_are_422_naming_the_parameter(
    client: httpx.AsyncClient, query: str, problem: str
) -> None:
    response = await client.get(f"/api/v1/alerts?{query}")
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [["query", problem]]


async def test_a_range_that_ends_before_it_starts_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/alerts?from=2024-05-02T00:00:00Z&to=2024-05-01T00:00:00Z")
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "'from' (2024-05-02T00:00:00+00:00) must be before 'to' (2024-05-01T00:00:00+00:00)"
    )


async def test_ack_then_409_on_a_second_ack_and_404_on_an_unknown_alert(
    client: httpx.AsyncClient, store: AlertStore
) -> None:
    alert_id = store.apply(finding()).alert.id
    response = await client.post(f"/api/v1/alerts/{alert_id}/ack")
    assert response.status_code == 200
    assert response.json()["status"] == "acknowledged"
    assert response.json()["acknowledged_at"] is not None
    again = await client.post(f"/api/v1/alerts/{alert_id}/ack")
    assert (again.status_code, again.json()["detail"]) == (409, f"alert {alert_id} is already acknowledged")
    missing = await client.post("/api/v1/alerts/404/ack")
    assert (missing.status_code, missing.json()["detail"]) == (404, "no alert with id 404")
    assert (await client.get("/api/v1/alerts/404")).status_code == 404


async def test_silence_until_a_time_with_a_reason(client: httpx.AsyncClient, store: AlertStore) -> None:
    alert_id = store.apply(finding()).alert.id
    body = {"until": "2099-01-01T08:00:00+07:00", "reason": "chiller maintenance"}
    response = await client.post(f"/api/v1/alerts/{alert_id}/silence", json=body)
    assert response.status_code == 200, response.text
    assert (response.json()["silenced_until"], response.json()["silence_reason"]) == (
        "2099-01-01T01:00:00Z",
        "chiller maintenance",
    )
    assert response.json()["status"] == "open"


async def test_silence_refuses_the_past_a_missing_reason_and_a_resolved_alert(
    client: httpx.AsyncClient, store: AlertStore
) -> None:
    alert_id = store.apply(finding()).alert.id
    past = await client.post(
        f"/api/v1/alerts/{alert_id}/silence", json={"until": "2020-01-01T00:00:00Z", "reason": "x"}
    )
    assert past.status_code == 422
    assert past.json()["detail"] == "'until' (2020-01-01 07:00 (UTC+7)) is not in the future"
    no_reason = await client.post(
        f"/api/v1/alerts/{alert_id}/silence", json={"until": "2099-01-01T00:00:00Z"}
    )
    assert no_reason.status_code == 422
    assert [e["loc"] for e in no_reason.json()["errors"]] == [["body", "reason"]]
    store.apply(finding(end_ms=at(21)))
    resolved = await client.post(
        f"/api/v1/alerts/{alert_id}/silence", json={"until": "2099-01-01T00:00:00Z", "reason": "x"}
    )
    assert (resolved.status_code, resolved.json()["detail"]) == (
        409,
        f"alert {alert_id} is resolved; there is nothing to silence",
    )
