"""API habits: intervals as CSV, ETag and Cache-Control with 304, a `Link: rel="next"` on every list."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from collector.alerts import AlertStore
from collector.api.app import create_app
from collector.api.deps import now
from collector.metrics import CollectorMetrics
from collector.store import Ledger, Location
from tests.alert_support import finding
from tests.api_support import api_client
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt

INTERVALS = "/api/v1/meters/m1/intervals?from=2024-05-01T10:00:00Z&to=2024-05-01T11:00:00Z"


@pytest.fixture
def ledger(ledger_at: LedgerAt) -> Location:
    path = ledger_at("kilowatch")
    with Ledger(path) as ledger:
        ledger.ingest(
            batch(reading(at(10), imp=100.0, exp=1.0, power_w=4000), reading(at(10, 20), imp=101.0))
        )
        for i in range(5):
            ledger.ingest(batch(reading(at(10), meter=f"x{i}", imp=1.0)))
    with AlertStore(path) as store:
        for i in range(5):
            store.apply(finding(meter=f"x{i}"))
    return path


@pytest.fixture
async def client(ledger: Location) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ledger=ledger, metrics=CollectorMetrics(), mqtt_connected=lambda: True)
    app.dependency_overrides[now] = lambda: datetime(2024, 5, 1, 10, 50, tzinfo=UTC)
    async with api_client(app, ledger) as client:
        yield client


@pytest.mark.parametrize("how", [{"params": {"format": "csv"}}, {"headers": {"Accept": "text/csv"}}])
async def test_intervals_as_csv(client: httpx.AsyncClient, how: dict[str, dict[str, str]]) -> None:
    response = await client.get(INTERVALS, **how)  # type: ignore[arg-type]
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    as_json = (await client.get(INTERVALS)).json()["intervals"]
    assert (
        [r["start"] for r in rows]
        == [i["start"] for i in as_json]
        == ["2024-05-01T10:00:00Z", "2024-05-01T10:15:00Z"]
    )
    assert rows[0] == {k: "" if v is None else str(v) for k, v in as_json[0].items()}


async def test_closed_intervals_carry_an_etag_and_answer_304(client: httpx.AsyncClient) -> None:
    first = await client.get(INTERVALS.replace("T11:00", "T10:45"))
    assert first.headers["cache-control"] == "private, max-age=3600"
    etag = first.headers["etag"]
    again = await client.get(
        INTERVALS.replace("T11:00", "T10:45"), headers={"If-None-Match": f'"x", W/{etag}'}
    )
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    csv_version = await client.get(INTERVALS.replace("T11:00", "T10:45") + "&format=csv")
    assert csv_version.headers["etag"] != etag
    open_range = await client.get(INTERVALS)  # up to 11:00: the 10:45 interval is still open at 10:50
    assert open_range.headers["cache-control"] == "private, no-cache"
    assert (await client.get(INTERVALS, headers={"If-None-Match": etag})).status_code == 200


def next_link(response: httpx.Response) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return match.group(1) if match else None


@pytest.mark.parametrize("path", ["/api/v1/meters", "/api/v1/alerts"])
async def test_lists_page_with_a_next_link(client: httpx.AsyncClient, path: str) -> None:
    seen: list[object] = []
    url: str | None = f"{path}?limit=2"
    pages = 0
    while url is not None:
        response = await client.get(url)
        page = response.json()
        assert len(page) <= 2
        seen += [item["id"] for item in page]
        url, pages = next_link(response), pages + 1
    everything = (await client.get(f"{path}?limit=1000")).json()
    assert seen == [item["id"] for item in everything]
    assert pages >= 3
    assert next_link(await client.get(f"{path}?limit=1000")) is None


async def test_limits_are_bounded(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/meters", "/api/v1/alerts", "/api/v1/gateways/events", "/api/v1/quarantine"):
        assert (await client.get(f"{path}?limit=1001")).status_code == 422
    assert (await client.get("/api/v1/meters?cursor=-1")).status_code == 422
