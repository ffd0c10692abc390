"""The HTTP API over a ledger filled by the tests, called through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest

from app.processes import PostgreSQL
from collector.api.app import create_app
from collector.metrics import CollectorMetrics, RejectReason
from collector.store import Ledger, Location
from kilowatch.mqtt_contract import ClockState, Quality, Reading
from tests.api_support import api_client
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt, drop_database


@pytest.fixture
def ledger(ledger_at: LedgerAt) -> Iterator[Ledger]:
    with Ledger(ledger_at("ledger")) as ledger:
        yield ledger


@pytest.fixture
def metrics() -> CollectorMetrics:
    return CollectorMetrics()


def api(
    where: Location, metrics: CollectorMetrics, mqtt_connected: Callable[[], bool]
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return api_client(create_app(ledger=where, metrics=metrics, mqtt_connected=mqtt_connected), where)


@pytest.fixture
async def client(ledger: Ledger, metrics: CollectorMetrics) -> AsyncIterator[httpx.AsyncClient]:
    async with api(ledger.where, metrics, lambda: True) as client:
        yield client


def fill(ledger: Ledger) -> None:
    ledger.ingest(
        batch(
            reading(at(10, 0), imp=100.0, exp=1.0, power_w=4000),
            reading(at(10, 15), imp=101.0, exp=1.25, power_w=3000),
            reading(at(10, 30), imp=103.0, exp=1.25, power_w=9000),
            reading(at(10, 5), meter="m2", power_w=50),
        )
    )
    ledger.ingest(
        batch(
            Reading(
                meter="m1",
                profile="eastron-sdm630",
                ts=at(10, 31),
                values={"active_power_w": 8000.0},
                quality=Quality.ERROR,
                value_quality={"energy_import_kwh": Quality.ERROR},
                clock=ClockState.UNKNOWN,
            ),
            site="site2",
            gateway="gw7",
        )
    )


async def test_meters_lists_every_meter_with_iso_utc_times(client: httpx.AsyncClient, ledger: Ledger) -> None:
    assert (await client.get("/api/v1/meters")).json() == []
    fill(ledger)
    assert (await client.get("/api/v1/meters")).json() == [
        {
            "id": "m1",
            "site": "site2",
            "gateway": "gw7",
            "profile": "eastron-sdm630",
            "first_seen": "2024-05-01T10:00:00Z",
            "last_seen": "2024-05-01T10:31:00Z",
        },
        {
            "id": "m2",
            "site": "site1",
            "gateway": "gw1",
            "profile": "eastron-sdm630",
            "first_seen": "2024-05-01T10:05:00Z",
            "last_seen": "2024-05-01T10:05:00Z",
        },
    ]


async def test_latest_gives_the_newest_reading(client: httpx.AsyncClient, ledger: Ledger) -> None:
    fill(ledger)
    response = await client.get("/api/v1/meters/m1/latest")
    assert response.status_code == 200
    assert response.json() == {
        "meter": "m1",
        "ts": "2024-05-01T10:31:00Z",
        "values": {"active_power_w": 8000.0},
        "quality": "error",
        "value_quality": {"energy_import_kwh": "error"},
        "value_reasons": {},
        "clock": "unknown",
    }


async def test_intervals_in_a_range(client: httpx.AsyncClient, ledger: Ledger) -> None:
    fill(ledger)
    response = await client.get(
        "/api/v1/meters/m1/intervals",
        params={"from": "2024-05-01T17:00:00+07:00", "to": "2024-05-01T10:30:00Z"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["meter"], body["start"], body["end"]) == (
        "m1",
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:30:00Z",
    )
    assert body["intervals"] == [
        {
            "start": "2024-05-01T10:00:00Z",
            "end": "2024-05-01T10:15:00Z",
            "energy_import_kwh": 1.0,
            "energy_export_kwh": 0.25,
            "mean_kw": 3.0,
            "max_kw": 4.0,
            "samples": 1,
        },
        {
            "start": "2024-05-01T10:15:00Z",
            "end": "2024-05-01T10:30:00Z",
            "energy_import_kwh": 2.0,
            "energy_export_kwh": 0.0,
            "mean_kw": 8.0,
            "max_kw": 3.0,
            "samples": 1,
        },
    ]
    # A range that starts inside a bucket still returns that bucket.
    inside = await client.get(
        "/api/v1/meters/m1/intervals", params={"from": "2024-05-01T10:20:00Z", "to": "2024-05-01T10:21:00Z"}
    )
    assert [i["start"] for i in inside.json()["intervals"]] == ["2024-05-01T10:15:00Z"]


async def test_intervals_default_to_the_last_24_hours(client: httpx.AsyncClient, ledger: Ledger) -> None:
    fill(ledger)  # May 2024: long before the default window
    body = (await client.get("/api/v1/meters/m1/intervals")).json()
    assert body["intervals"] == []
    assert body["start"] < body["end"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/meters/nope/latest", {}),
        ("/api/v1/meters/nope/intervals", {"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T11:00:00Z"}),
    ],
)
async def test_an_unknown_meter_is_a_404_problem(
    client: httpx.AsyncClient, ledger: Ledger, path: str, params: dict[str, str]
) -> None:
    fill(ledger)
    response = await client.get(path, params=params)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "unknown meter 'nope'",
        "instance": path,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2024-05-01T11:00:00Z", "to": "2024-05-01T11:00:00Z"}, "must be before"),
        ({"from": "2024-05-01T12:00:00Z", "to": "2024-05-01T11:00:00Z"}, "must be before"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2024-05-01T11:00:00Z"}, "longer than 31 days"),
        ({"from": "2024-05-01T10:00:00"}, "timezone"),
        ({"to": "yesterday"}, "datetime"),
    ],
)
async def test_a_bad_range_is_a_422(
    client: httpx.AsyncClient, ledger: Ledger, params: dict[str, str], message: str
) -> None:
    fill(ledger)
    response = await client.get("/api/v1/meters/m1/intervals", params=params)
    assert response.status_code == 422
    assert message in response.text


async def test_healthz_reports_mqtt_and_ledger(
    ledger: Ledger, metrics: CollectorMetrics, ledger_at: LedgerAt, postgresql_if: Callable[[], PostgreSQL]
) -> None:
    connected = False
    async with api(ledger.where, metrics, lambda: connected) as client:
        assert (await client.get("/healthz")).json() == {
            "status": "degraded",
            "mqtt_connected": False,
            "ledger_ok": True,
            "ledger_error": None,
            "warnings": [],
        }
        connected = True
        assert (await client.get("/healthz")).json() == {
            "status": "ok",
            "mqtt_connected": True,
            "ledger_ok": True,
            "ledger_error": None,
            "warnings": [],
        }
    broken = ledger_at("broken")
    Ledger(broken).close()
    async with api(broken, metrics, lambda: True) as client:
        # The ledger goes while the server runs: its file is damaged, its database dropped.
        if isinstance(broken, Path):
            broken.write_bytes(b"not a database" * 512)
        else:
            drop_database(postgresql_if(), broken)
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "failing"


async def test_metrics_serves_this_instances_registry(
    client: httpx.AsyncClient, metrics: CollectorMetrics
) -> None:
    metrics.rejected.labels(reason=RejectReason.INVALID_JSON.value).inc(3)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'kilowatch_collector_rejected_messages_total{reason="invalid_json"} 3.0' in response.text
    assert 'kilowatch_collector_rejected_messages_total{reason="bad_topic"} 0.0' in response.text
    assert CollectorMetrics().registry is not metrics.registry


async def test_openapi_documents_the_public_models(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert {"MeterOut", "LatestOut", "IntervalOut", "IntervalsOut", "HealthOut", "Problem"} <= schemas.keys()
