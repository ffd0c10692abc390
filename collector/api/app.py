"""The collector's HTTP API: meters, their latest values and 15-minute intervals; alerts and reports; what is
quarantined, missing or reported by gateways; health and metrics.

Response models are the public contract and independent of the ledger's rows; times are ISO 8601 in UTC;
errors are RFC 9457 problem details (:mod:`collector.api.problems`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from collector.alerts import AlertStore
from collector.api import alerts, gateways, health, meters, metrics, problems, quarantine, reports
from collector.api.deps import ApiContext, ApiState
from collector.detectors.config import Sites
from collector.metrics import CollectorMetrics
from kilowatch import __version__

_ROUTERS = (meters, quarantine, gateways, health, metrics, alerts, reports)


class _App(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with every error response declared as problem details."""
        if self.openapi_schema is None:
            problems.document(super().openapi())
        assert self.openapi_schema is not None
        return self.openapi_schema


def create_app(
    *,
    ledger_path: Path,
    metrics: CollectorMetrics,
    mqtt_connected: Callable[[], bool],
    sites: Sites | None = None,
    ledger_error: Callable[[], str | None] = lambda: None,
) -> FastAPI:
    """The API over the ledger at `ledger_path` (which must exist: the :class:`Ledger` creates it)."""
    context = ApiContext(
        ledger_path=ledger_path,
        metrics=metrics,
        mqtt_connected=mqtt_connected,
        sites=sites,
        ledger_error=ledger_error,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[ApiState]:
        """One alert store for every request while the server runs (its lock serialises them), closed
        when the server stops."""
        store = await asyncio.to_thread(AlertStore, context.ledger_path)
        try:
            yield ApiState(context=context, alerts=store)
        finally:
            await asyncio.to_thread(store.close)

    app = _App(title="kilowatch collector", version=__version__, lifespan=lifespan)
    for module in _ROUTERS:
        app.include_router(module.router)
    problems.install(app)
    return app
