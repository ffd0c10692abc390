"""Health: whether the collector has its broker connection and can read its ledger."""

from __future__ import annotations

import sqlite3
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from collector.api.deps import Context
from collector.store import LedgerReader


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "failing"] = Field(
        description="ok; degraded = no MQTT connection (the API still serves); failing = ledger unreadable"
    )
    mqtt_connected: bool
    ledger_ok: bool
    warnings: list[str] = Field(
        default_factory=list, description="Settings not confirmed that detection depends on, per site"
    )


router = APIRouter(tags=["operations"])


@router.get("/healthz", responses={503: {"model": HealthOut, "description": "The ledger is unreadable"}})
def healthz(context: Context, response: Response) -> HealthOut:
    try:
        with LedgerReader(context.ledger_path) as reader:
            ledger_ok = reader.ping()
    except sqlite3.Error:
        ledger_ok = False
    mqtt_connected = context.mqtt_connected()
    if not ledger_ok:
        response.status_code = 503
    status: Literal["ok", "degraded", "failing"] = (
        "failing" if not ledger_ok else "ok" if mqtt_connected else "degraded"
    )
    sites = context.sites.sites if context.sites is not None else {}
    warnings = [
        f"{site_id}: {w}" for site_id, s in sites.items() if (w := s.calendar.tou_unconfirmed) is not None
    ]
    return HealthOut(status=status, mqtt_connected=mqtt_connected, ledger_ok=ledger_ok, warnings=warnings)
