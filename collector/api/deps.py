"""What the routes are given, as ``Annotated`` aliases: the API's context (settings, metrics, the MQTT
connection's state), a ledger reader, the alert store, the clock.

The context and the alert store live in the app's lifespan state (:mod:`collector.api.app` opens the
store once, when the server starts, and closes it when it stops). A ledger reader is opened per request on
a read-only connection of its own (routes are plain ``def``, run in FastAPI's thread pool), so reads never
wait for ingestion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypedDict

from fastapi import Depends, Query, Request

from collector.alerts import AlertStore
from collector.detectors.config import Sites
from collector.metrics import CollectorMetrics
from collector.store import LedgerReader


@dataclass(frozen=True)
class ApiContext:
    """What the routes need from the running collector."""

    ledger_path: Path
    metrics: CollectorMetrics
    mqtt_connected: Callable[[], bool]
    sites: Sites | None = None
    """The detection settings, when detection runs: sites' calendars and meters for the reports."""
    ledger_error: Callable[[], str | None] = lambda: None
    """Why ingestion is paused because the ledger cannot commit (a full disk); None while it commits."""


class ApiState(TypedDict):
    """The lifespan state every request sees."""

    context: ApiContext
    alerts: AlertStore


async def _context(request: Request) -> ApiContext:
    context = request.state.context
    assert isinstance(context, ApiContext)
    return context


async def _alerts(request: Request) -> AlertStore:
    store = request.state.alerts
    assert isinstance(store, AlertStore)
    return store


def _reader(context: Annotated[ApiContext, Depends(_context)]) -> Iterator[LedgerReader]:
    with LedgerReader(context.ledger_path) as reader:
        yield reader


async def now() -> datetime:
    """The wall clock, in UTC (a dependency, so tests can fix it)."""
    return datetime.now(UTC)


Context = Annotated[ApiContext, Depends(_context)]
Reader = Annotated[LedgerReader, Depends(_reader)]
Alerts = Annotated[AlertStore, Depends(_alerts)]
Now = Annotated[datetime, Depends(now)]
Limit = Annotated[int, Query(ge=1, le=10_000, description="At most this many")]
