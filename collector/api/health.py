"""Health: whether the collector has its broker connection and can read its ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, Field

from collector.api.deps import Context
from collector.store import DatabaseError, LedgerReader


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "failing"] = Field(
        description="ok; degraded = no MQTT connection, or the ledger cannot commit (ingestion paused, the "
        "broker keeps the messages; the API still serves); failing = ledger unreadable, or not open yet "
        "(a collector started on a full disk waits for room)"
    )
    mqtt_connected: bool
    ledger_ok: bool
    ledger_error: str | None = Field(
        None,
        description="Why the ledger cannot commit (a full disk, say) while ingestion is paused for it, or "
        "why it cannot be opened while the collector waits to start",
    )
    warnings: list[str] = Field(
        default_factory=list, description="Settings not confirmed that detection depends on, per site"
    )


router = APIRouter(tags=["operations"])


@router.get("/healthz", responses={503: {"model": HealthOut, "description": "The ledger is unreadable"}})
def healthz(context: Context, response: Response) -> HealthOut:
    try:
        with LedgerReader(context.ledger) as reader:
            ledger_ok = reader.ping()
    except DatabaseError:
        ledger_ok = False
    mqtt_connected = context.mqtt_connected()
    ledger_error = context.ledger_error()
    if not ledger_ok:
        response.status_code = 503
    status: Literal["ok", "degraded", "failing"] = (
        "failing" if not ledger_ok else "ok" if mqtt_connected and ledger_error is None else "degraded"
    )
    sites = context.sites.sites if context.sites is not None else {}
    warnings = [
        f"{site_id}: {w}" for site_id, s in sites.items() if (w := s.calendar.tou_unconfirmed) is not None
    ]
    return HealthOut(
        status=status,
        mqtt_connected=mqtt_connected,
        ledger_ok=ledger_ok,
        ledger_error=ledger_error,
        warnings=warnings,
    )


def waiting_app(reason: Callable[[], str]) -> FastAPI:
    """What answers while the collector waits to open its ledger (started on a full disk): ``/healthz``
    alone, failing with the reason, so that monitoring sees why; the API proper needs the ledger."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz", status_code=503)
    def waiting() -> HealthOut:
        return HealthOut(status="failing", mqtt_connected=False, ledger_ok=False, ledger_error=reason())

    return app
