"""Gateways: each one's last status, the changes of its state, and its events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from collector.store.connection import Db
from kilowatch.mqtt_contract import GatewayEvent, GatewayEventKind, GatewayState, GatewayStatus


@dataclass(frozen=True, slots=True)
class GatewayRow:
    site: str
    gateway: str
    state: str
    ts: int
    agent_version: str
    meters: list[str]
    received_at: int


class CollectorEventKind(StrEnum):
    """What the collector itself noticed about a gateway; kept with the gateway's own events."""

    FOREIGN_METER = "foreign_meter"
    """The gateway sent readings of a meter bound to another gateway: refused (named in `detail`)."""
    METER_MOVED = "meter_moved"
    """A meter was moved to this gateway by ``kilowatch collector move-meter``."""
    SPOOL_EPOCH = "spool_epoch"
    """A spool's seq jumped further than any backlog could (or began there): a new numbering, not that
    many missing batches; `detail` says from which seq to which."""


@dataclass(frozen=True, slots=True)
class GatewayEventRow:
    id: int
    site: str
    gateway: str
    ts: int
    kind: GatewayEventKind | CollectorEventKind
    readings: int
    oldest_ts: int | None
    newest_ts: int | None
    detail: str
    received_at: int


def record_status(db: Db, status: GatewayStatus, received_at: int) -> None:
    """The last status to arrive wins (a last will is older than the birth it follows); a change of state
    is also kept in ``gateway_states``."""
    previous = db.execute(
        "SELECT state FROM gateways WHERE site = ? AND gateway = ?", (status.site, status.gateway)
    ).fetchone()
    if previous is None or previous[0] != status.state.value:
        db.execute(
            "INSERT INTO gateway_states VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (status.site, status.gateway, received_at, status.state.value, status.ts),
        )
    db.execute(
        "INSERT INTO gateways VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway) DO UPDATE SET"
        " state = excluded.state, ts = excluded.ts, agent_version = excluded.agent_version,"
        " meters = excluded.meters, received_at = excluded.received_at",
        (status.site, status.gateway, status.state.value, status.ts, status.agent_version,
         json.dumps(status.meters), received_at),
    )  # fmt: skip


def record_event(db: Db, event: GatewayEvent, received_at: int) -> bool:
    """Keep a gateway event; False when it already is (a resend)."""
    cursor = db.execute(
        "INSERT INTO gateway_events"
        " (site, gateway, ts, kind, readings, oldest_ts, newest_ts, detail, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (event.site, event.gateway, event.ts, event.kind.value, event.readings, event.oldest_ts,
         event.newest_ts, event.detail, received_at),
    )  # fmt: skip
    return cursor.rowcount == 1


def record_collector_event(
    db: Db,
    site: str,
    gateway: str,
    kind: CollectorEventKind,
    detail: str,
    *,
    at: int,
    readings: int = 0,
    oldest_ts: int | None = None,
    newest_ts: int | None = None,
) -> None:
    """Keep what the collector noticed about a gateway at `at` (collector clock), beside its own events."""
    db.execute(
        "INSERT INTO gateway_events"
        " (site, gateway, ts, kind, readings, oldest_ts, newest_ts, detail, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (site, gateway, at, kind.value, readings, oldest_ts, newest_ts, detail, at),
    )


def event_kind(value: str) -> GatewayEventKind | CollectorEventKind:
    """A stored event's kind: the gateway's, or the collector's."""
    try:
        return GatewayEventKind(value)
    except ValueError:
        return CollectorEventKind(value)


class GatewayStateChange(NamedTuple):
    """A gateway's state as it changed, when the collector received it."""

    gateway: str
    state: GatewayState
    received_at: int
