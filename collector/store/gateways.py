"""Gateways: each one's last status, the changes of its state, and its events."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

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


@dataclass(frozen=True, slots=True)
class GatewayEventRow:
    id: int
    site: str
    gateway: str
    ts: int
    kind: GatewayEventKind
    readings: int
    oldest_ts: int | None
    newest_ts: int | None
    detail: str
    received_at: int


def record_status(db: sqlite3.Connection, status: GatewayStatus, received_at: int) -> None:
    """The last status to arrive wins (a last will is older than the birth it follows); a change of state
    is also kept in ``gateway_states``."""
    previous = db.execute(
        "SELECT state FROM gateways WHERE site = ? AND gateway = ?", (status.site, status.gateway)
    ).fetchone()
    if previous is None or previous[0] != status.state.value:
        db.execute(
            "INSERT OR IGNORE INTO gateway_states VALUES (?, ?, ?, ?, ?)",
            (status.site, status.gateway, received_at, status.state.value, status.ts),
        )
    db.execute(
        "INSERT OR REPLACE INTO gateways VALUES (?, ?, ?, ?, ?, ?, ?)",
        (status.site, status.gateway, status.state.value, status.ts, status.agent_version,
         json.dumps(status.meters), received_at),
    )  # fmt: skip


def record_event(db: sqlite3.Connection, event: GatewayEvent, received_at: int) -> bool:
    """Keep a gateway event; False when it already is (a resend)."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO gateway_events"
        " (site, gateway, ts, kind, readings, oldest_ts, newest_ts, detail, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event.site, event.gateway, event.ts, event.kind.value, event.readings, event.oldest_ts,
         event.newest_ts, event.detail, received_at),
    )  # fmt: skip
    return cursor.rowcount == 1


class GatewayStateChange(NamedTuple):
    """A gateway's state as it changed, when the collector received it."""

    gateway: str
    state: GatewayState
    received_at: int
