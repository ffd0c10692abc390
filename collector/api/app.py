"""The collector's HTTP API: meters, their latest values and 15-minute intervals; alerts and reports; what is
quarantined, missing or reported by gateways; health and metrics.

Response models are the public contract and independent of the ledger's rows; times are ISO 8601 in UTC;
errors are RFC 9457 problem details (:mod:`collector.api.problems`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from collector.access import Access
from collector.alerts import AlertStore
from collector.api import (
    alerts,
    gateways,
    health,
    meters,
    metrics,
    problems,
    quarantine,
    reports,
    saving,
    session,
)
from collector.api.deps import ApiContext, ApiState, viewer
from collector.config import ApiSettings
from collector.detectors.config import Sites
from collector.metrics import CollectorMetrics
from collector.store import Location
from collector.store.access import AccessStore
from collector.web import pages
from kilowatch import __version__

_ROUTERS = (session, meters, quarantine, gateways, health, metrics, alerts, reports, saving)


class _App(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with every error response declared as problem details."""
        if self.openapi_schema is None:
            problems.document(super().openapi())
        assert self.openapi_schema is not None
        return self.openapi_schema


def _documentation(app: _App) -> None:
    """The OpenAPI document and its Swagger UI, for callers with credentials like every route (FastAPI's
    own would be open to all)."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(viewer)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(viewer)])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API")


def create_app(
    *,
    ledger: Location,
    metrics: CollectorMetrics,
    mqtt_connected: Callable[[], bool],
    sites: Sites | None = None,
    settings: ApiSettings | None = None,
    ledger_error: Callable[[], str | None] = lambda: None,
) -> FastAPI:
    """The API over `ledger` (which must exist: the :class:`Ledger` creates it)."""
    context = ApiContext(
        ledger=ledger,
        metrics=metrics,
        mqtt_connected=mqtt_connected,
        settings=settings or ApiSettings(),
        sites=sites,
        ledger_error=ledger_error,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[ApiState]:
        """One alert store and one access store for every request while the server runs (their locks
        serialise them), closed when the server stops."""
        store = await asyncio.to_thread(AlertStore, context.ledger)
        try:
            access = await asyncio.to_thread(AccessStore, context.ledger)
            try:
                yield ApiState(context=context, alerts=store, access=Access(access))
            finally:
                await asyncio.to_thread(access.close)
        finally:
            await asyncio.to_thread(store.close)

    app = _App(
        title="kilowatch collector",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    _documentation(app)
    for module in _ROUTERS:
        app.include_router(module.router)
    problems.install(app)
    pages.install(app)
    return app
