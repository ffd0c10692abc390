"""Alerts as stored, the days whose digests were queued, and the notification outbox beside them.

:class:`AlertLedger` has a connection of its own to the ledger's file (the ledger's writer is busy
ingesting); WAL lets their short transactions take turns and ``busy_timeout`` makes each wait for the
other. What an alert's lifecycle does with these rows is :class:`collector.alerts.AlertStore`'s business.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from collector.detectors.findings import Detector
from collector.store import connection, outbox, retention
from collector.store.connection import Closing, Db, Location, location
from collector.store.outbox import NotificationRow


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(BaseModel):
    """One alert as stored; times are UTC ms (event time unless said otherwise)."""

    model_config = ConfigDict(frozen=True)

    id: int
    site: str
    meter: str
    detector: Detector
    rule: str
    status: AlertStatus
    start_ms: int
    end_ms: int | None
    detected_at: int = Field(description="When the condition could first be detected")
    raised_at: int = Field(description="Wall-clock time the alert was stored")
    raised_late: bool
    last_seen: int = Field(description="detected_at of the newest finding merged in")
    count: int = Field(description="Findings merged into the alert")
    occurrence_start_ms: int = Field(description="start_ms of the newest occurrence")
    occurrence_kwh: float = Field(description="What the newest occurrence wasted so far")
    prior_kwh: float = Field(description="What earlier occurrences of this alert wasted")
    occurrence_vnd: float = Field(description="What the newest occurrence's waste cost so far")
    prior_vnd: float = Field(description="What earlier occurrences' waste cost")
    magnitude: float | None
    finding_en: str
    finding_vi: str
    acknowledged_at: int | None
    silenced_until: int | None
    silence_reason: str | None
    resolved_at: int | None

    @property
    def wasted_kwh(self) -> float:
        return self.prior_kwh + self.occurrence_kwh

    @property
    def cost_vnd(self) -> float:
        return self.prior_vnd + self.occurrence_vnd

    def silenced(self, now_ms: int) -> bool:
        return self.silenced_until is not None and self.silenced_until > now_ms


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters of :meth:`AlertLedger.alerts`; None = any. [start_ms, end_ms) selects alerts overlapping it."""

    status: AlertStatus | None = None
    detector: Detector | None = None
    site: str | None = None
    meter: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    before_id: int | None = None
    limit: int = 100


_INSERTED = [name for name in Alert.model_fields if name != "id"]
_INSERT = (
    f"INSERT INTO alerts ({', '.join(_INSERTED)}) VALUES ({', '.join('?' * len(_INSERTED))}) RETURNING id"  # noqa: S608
)
_MERGED = [
    "status", "end_ms", "last_seen", "count", "occurrence_start_ms", "occurrence_kwh", "prior_kwh",
    "occurrence_vnd", "prior_vnd", "magnitude", "finding_en", "finding_vi", "resolved_at",
]  # fmt: skip
_MERGE = f"UPDATE alerts SET {', '.join(f'{name} = ?' for name in _MERGED)} WHERE id = ?"  # noqa: S608
"""Column names come from the model's fields, never from input."""


def _alert(row: Mapping[str, Any]) -> Alert:
    return Alert.model_validate(dict(row))


def _params(alert: Alert, names: list[str]) -> list[Any]:
    values = alert.model_dump(mode="json", include=set(names))
    return [values[name] for name in names]


class AlertTransaction:
    """The statements of one :meth:`AlertLedger.transaction`."""

    def __init__(self, db: Db) -> None:
        self._db = db

    def get(self, alert_id: int) -> Alert | None:
        row = self._db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else _alert(row)

    def active(self, site: str, meter: str, detector: Detector, rule: str) -> Alert | None:
        """The open or acknowledged alert of (site, meter, detector, rule), if any (at most one)."""
        row = self._db.execute(
            "SELECT * FROM alerts WHERE site = ? AND meter = ? AND detector = ? AND rule = ?"
            " AND status != 'resolved'",
            (site, meter, detector.value, rule),
        ).fetchone()
        return None if row is None else _alert(row)

    def resolved_occurrence(
        self, site: str, meter: str, detector: Detector, rule: str, start_ms: int
    ) -> Alert | None:
        """The newest resolved alert whose latest occurrence began at `start_ms`."""
        row = self._db.execute(
            "SELECT * FROM alerts WHERE site = ? AND meter = ? AND detector = ? AND rule = ?"
            " AND occurrence_start_ms = ? AND status = 'resolved' ORDER BY id DESC LIMIT 1",
            (site, meter, detector.value, rule, start_ms),
        ).fetchone()
        return None if row is None else _alert(row)

    def insert(self, alert: Alert) -> int:
        """Store a new alert (its `id` is ignored); returns the id it got."""
        return int(self._db.execute(_INSERT, _params(alert, _INSERTED)).fetchone()["id"])

    def merge(self, alert: Alert) -> None:
        """Write what a merged finding changes (status, end, occurrence, waste, wording, count)."""
        self._db.execute(_MERGE, [*_params(alert, _MERGED), alert.id])

    def acknowledge(self, alert_id: int, at_ms: int) -> None:
        self._db.execute(
            "UPDATE alerts SET status = ?, acknowledged_at = ? WHERE id = ?",
            (AlertStatus.ACKNOWLEDGED.value, at_ms, alert_id),
        )

    def silence(self, alert_id: int, until_ms: int, reason: str) -> None:
        """Set the alert's silence and postpone its waiting notifications to its end."""
        self._db.execute(
            "UPDATE alerts SET silenced_until = ?, silence_reason = ? WHERE id = ?",
            (until_ms, reason, alert_id),
        )
        outbox.postpone_notifications(self._db, alert_id, until_ms)

    def notify(
        self, channels: Sequence[str], kind: str, body: str, due_ms: int, alert_id: int | None = None
    ) -> None:
        outbox.notify(self._db, channels, kind, body, due_ms, alert_id)

    def drop_notifications(self, alert_id: int, kind: str) -> None:
        outbox.drop_notifications(self._db, alert_id, kind)

    def mark_digest_day(self, day: str, at_ms: int) -> bool:
        """Record that `day`'s digests are queued; False when they were before."""
        return (
            self._db.execute(
                "INSERT INTO digest_days VALUES (?, ?) ON CONFLICT DO NOTHING", (day, at_ms)
            ).rowcount
            == 1
        )

    def mark_report_month(self, month: str, at_ms: int) -> bool:
        """Record that `month`'s report e-mails are queued; False when they were before."""
        return (
            self._db.execute(
                "INSERT INTO report_months VALUES (?, ?) ON CONFLICT DO NOTHING", (month, at_ms)
            ).rowcount
            == 1
        )


class AlertLedger(Closing):
    """The alert tables on a connection of their own; methods are serialised by a lock.

    Args:
        where: The ledger (a SQLite file or a PostgreSQL database); brought to the current schema if it
            is not.
    """

    def __init__(self, where: Path | str | Location) -> None:
        self._lock = threading.Lock()
        self._db = connection.open_side_writer(location(where), mapping_rows=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[AlertTransaction]:
        """BEGIN (IMMEDIATE) ... COMMIT; ROLLBACK on any failure."""
        with self._lock:
            self._db.begin()
            try:
                yield AlertTransaction(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def get(self, alert_id: int) -> Alert | None:
        with self._lock:
            return AlertTransaction(self._db).get(alert_id)

    def alerts(self, query: AlertQuery) -> list[Alert]:
        """Alerts matching `query`, newest first."""
        where, params = _where(query)
        sql = f"SELECT * FROM alerts WHERE {where} ORDER BY id DESC LIMIT ?"  # noqa: S608 - fixed clauses
        with self._lock:
            rows = self._db.execute(sql, [*params, query.limit]).fetchall()
        return [_alert(row) for row in rows]

    def sites_with_alerts(self, start_ms: int, end_ms: int) -> list[str]:
        """Sites with an active alert or one that began in [start_ms, end_ms)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT site FROM alerts WHERE status != 'resolved' OR (start_ms >= ? AND start_ms < ?)"
                " ORDER BY site",
                (start_ms, end_ms),
            ).fetchall()
        return [row["site"] for row in rows]

    def due(self, channel: str, now_ms: int, limit: int) -> list[NotificationRow]:
        """The channel's notifications due by `now_ms`, oldest first."""
        with self._lock:
            return outbox.due_notifications(self._db, channel, now_ms, limit)

    def next_due(self, channel: str) -> int | None:
        with self._lock:
            return outbox.next_notification_due(self._db, channel)

    def prune_resolved(self, *, before_ms: int, limit: int) -> int:
        """Forget at most `limit` alerts resolved before `before_ms` (retention), in one transaction."""
        with self.transaction():
            return retention.prune_alerts(self._db, before_ms=before_ms, limit=limit)

    def delivered(self, row_id: int) -> None:
        with self.transaction():
            outbox.notification_delivered(self._db, row_id)

    def failed(self, row_id: int) -> None:
        with self.transaction():
            outbox.notification_failed(self._db, row_id)


def _where(query: AlertQuery) -> tuple[str, list[Any]]:
    clauses: list[tuple[str, Any]] = [
        ("status = ?", query.status and query.status.value),
        ("detector = ?", query.detector and query.detector.value),
        ("site = ?", query.site),
        ("meter = ?", query.meter),
        ("start_ms < ?", query.end_ms),
        ("coalesce(end_ms, 9223372036854775807) >= ?", query.start_ms),
        ("id < ?", query.before_id),
    ]
    chosen = [(clause, value) for clause, value in clauses if value is not None]
    return " AND ".join(["1 = 1", *(clause for clause, _ in chosen)]), [value for _, value in chosen]
