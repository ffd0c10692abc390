"""Gateways: their last status, the events they reported and the batches that never arrived."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from collector.api.deps import Reader, Viewer, viewer
from collector.api.paging import LINK_HEADER, Paged
from collector.store import CollectorEventKind
from kilowatch.mqtt_contract import GatewayEventKind, GatewayState
from kilowatch.timebase import utc_datetime, utc_datetime_or_none


class GatewayOut(BaseModel):
    site: str
    gateway: str
    state: GatewayState = Field(description="online (its birth) or offline (its last will, or a clean stop)")
    ts: datetime | None = Field(
        description="When the gateway wrote that status (gateway clock; null: no calendar date, a broken clock)"
    )
    agent_version: str
    meters: list[str] = Field(description="The meters it polls")
    received_at: datetime = Field(description="When the collector received the status")


class GatewayEventOut(BaseModel):
    site: str
    gateway: str
    ts: datetime | None = Field(
        description="When it happened (gateway clock, null if no calendar date; the collector's for its kinds)"
    )
    kind: GatewayEventKind | CollectorEventKind = Field(
        description="What happened: reported by the gateway, or noticed by the collector (foreign_meter: "
        "readings of a meter bound to another gateway refused; meter_moved; spool_epoch: a seq jump too "
        "large to be missing batches)"
    )
    readings: int = Field(description="Readings it concerns (evicted, or not stored)")
    oldest_ts: datetime | None
    newest_ts: datetime | None
    detail: str
    received_at: datetime


class SeqGapOut(BaseModel):
    site: str
    gateway: str
    spool_id: str | None
    first_seq: int = Field(description="First batch number that never arrived")
    last_seq: int = Field(description="Last batch number that never arrived")
    batches: int = Field(description="last_seq - first_seq + 1")
    detected_at: datetime


def _optional_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else utc_datetime_or_none(ms)


router = APIRouter(prefix="/api/v1/gateways", tags=["accounting"], dependencies=[Depends(viewer)])


@router.get("", responses={200: {"headers": LINK_HEADER}})
def list_gateways(reader: Reader, principal: Viewer, page: Paged) -> list[GatewayOut]:
    """Every gateway's last status, by site and gateway."""
    return [
        GatewayOut(
            site=row.site,
            gateway=row.gateway,
            state=GatewayState(row.state),
            ts=utc_datetime_or_none(row.ts),
            agent_version=row.agent_version,
            meters=row.meters,
            received_at=utc_datetime(row.received_at),
        )
        for row in page.take(lambda _: reader.gateways(), lambda row: principal.sees(row.site))
    ]


@router.get("/events", responses={200: {"headers": LINK_HEADER}})
def list_gateway_events(reader: Reader, principal: Viewer, page: Paged) -> list[GatewayEventOut]:
    """What gateways reported happening (spool evictions, corruption, full disk), newest first."""
    return [
        GatewayEventOut(
            site=row.site,
            gateway=row.gateway,
            ts=utc_datetime_or_none(row.ts),
            kind=row.kind,
            readings=row.readings,
            oldest_ts=_optional_datetime(row.oldest_ts),
            newest_ts=_optional_datetime(row.newest_ts),
            detail=row.detail,
            received_at=utc_datetime(row.received_at),
        )
        for row in page.take(reader.gateway_events, lambda row: principal.sees(row.site))
    ]


@router.get("/gaps", responses={200: {"headers": LINK_HEADER}})
def list_seq_gaps(reader: Reader, principal: Viewer, page: Paged) -> list[SeqGapOut]:
    """Batches a gateway numbered but never delivered (its spool evicted them), per spool."""
    return [
        SeqGapOut(
            site=row.site,
            gateway=row.gateway,
            spool_id=row.spool_id,
            first_seq=row.first_seq,
            last_seq=row.last_seq,
            batches=row.last_seq - row.first_seq + 1,
            detected_at=utc_datetime(row.detected_at),
        )
        for row in page.take(lambda _: reader.seq_gaps(), lambda row: principal.sees(row.site))
    ]
