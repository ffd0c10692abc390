"""Alerts: what people act on, made from detectors' findings and kept in the ledger's SQLite file.

Lifecycle: open -> acknowledged -> resolved, resolved automatically when a finding says its condition
cleared (``end_ms``); ``silenced_until`` holds back notifications, not the alert. One active (open or
acknowledged) alert per (site, meter, detector, rule), enforced by a partial unique index: a repeat
updates it. Applying a finding is idempotent, so detectors that replay history after a restart, a
backlog or a backfill never duplicate an alert nor notify twice.

The store has its own connection (the :class:`~collector.ledger.Ledger` writer is busy ingesting); WAL
lets their short transactions take turns, ``busy_timeout`` makes each wait for the other. Notifications
are written to ``alert_outbox`` in the transaction that opens or resolves an alert, one row per channel,
so a restart loses none; :mod:`collector.notifiers` drains it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from collector.config import AlertSettings
from collector.detectors.findings import Detector, Finding

VIETNAM = timezone(timedelta(hours=7), "UTC+7")
"""Local time of every site (Vietnam keeps no daylight saving time)."""

BUSY_TIMEOUT_MS = 10_000
"""How long a statement waits for the ledger's writer to finish its transaction."""

Clock = Callable[[], int]
"""Wall-clock time in UTC ms; tests pass a fixed one."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    meter TEXT NOT NULL,
    detector TEXT NOT NULL,
    rule TEXT NOT NULL,
    status TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    detected_at INTEGER NOT NULL,
    raised_at INTEGER NOT NULL,
    raised_late INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL,
    occurrence_start_ms INTEGER NOT NULL,
    occurrence_kwh REAL NOT NULL,
    prior_kwh REAL NOT NULL,
    occurrence_vnd REAL NOT NULL,
    prior_vnd REAL NOT NULL,
    tariff_vnd_per_kwh REAL NOT NULL,
    magnitude REAL,
    finding_en TEXT NOT NULL,
    finding_vi TEXT NOT NULL,
    acknowledged_at INTEGER,
    silenced_until INTEGER,
    silence_reason TEXT,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active
    ON alerts (site, meter, detector, rule) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_by_key ON alerts (site, meter, detector, rule, occurrence_start_ms);
CREATE INDEX IF NOT EXISTS alerts_by_start ON alerts (site, start_ms);
CREATE TABLE IF NOT EXISTS digest_days (
    day TEXT PRIMARY KEY,
    queued_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    alert_id INTEGER,
    due_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alert_outbox_due ON alert_outbox (channel, due_ms);
"""


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class ChangeKind(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    RESOLVED = "resolved"
    UNCHANGED = "unchanged"


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
    tariff_vnd_per_kwh: float
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

    def messages(self) -> tuple[str, str]:
        """(Vietnamese, English): the detector's words, the cost, and a note when it was raised late."""
        kwh, vnd = self.wasted_kwh, self.cost_vnd
        vi = f"{self.finding_vi} Lãng phí {kwh:.1f} kWh, khoảng {vnd_vi(vnd)}."
        en = f"{self.finding_en} Wasted {kwh:.1f} kWh, about {vnd_en(vnd)}."
        if self.raised_late:
            detected, raised = local_text(self.detected_at), local_text(self.raised_at)
            vi += (
                f" Cảnh báo muộn: có thể phát hiện lúc {detected} nhưng chỉ được báo lúc {raised}"
                " (dữ liệu đến trễ, ví dụ sau khi mất kết nối)."
            )
            en += (
                f" Raised late: detectable at {detected} but reported only at {raised}"
                " (data arrived late, e.g. after an outage)."
            )
        return vi, en


def vnd_vi(amount: float) -> str:
    return f"{round(amount):,} đồng".replace(",", ".")


def vnd_en(amount: float) -> str:
    return f"{round(amount):,} VND"


def local_text(ms: int) -> str:
    return f"{to_datetime(ms).astimezone(VIETNAM):%Y-%m-%d %H:%M} (UTC+7)"


def to_datetime(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def to_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def local_day_ms(day: date) -> tuple[int, int]:
    """[start, end) of a Vietnamese calendar day in UTC ms."""
    start = datetime(day.year, day.month, day.day, tzinfo=VIETNAM)
    return to_ms(start), to_ms(start + timedelta(days=1))


class AlertOut(BaseModel):
    """An alert as the API and notifications show it: ISO 8601 times in UTC, cost and messages included."""

    id: int
    site: str
    meter: str
    detector: Detector
    rule: str
    status: AlertStatus
    start: datetime = Field(description="When the condition began (event time)")
    end: datetime | None = Field(description="When it cleared; null while it lasts")
    detected_at: datetime = Field(description="When it could first be detected (event time)")
    raised_at: datetime = Field(description="When the collector stored the alert")
    raised_late: bool = Field(
        description="Stored well after it could have been detected, e.g. from a backlog"
    )
    last_seen: datetime = Field(description="Event time of the newest finding")
    count: int = Field(description="Findings merged into this alert")
    wasted_kwh: float
    cost_vnd: float = Field(
        description="The detectors' cost at the site's tariff; wasted_kwh x tariff_vnd_per_kwh if they gave none"
    )
    tariff_vnd_per_kwh: float = Field(description="The flat rate used when a finding carries no cost")
    magnitude: float | None = Field(description="The rule's measure, e.g. kW above base load")
    message_vi: str
    message_en: str
    acknowledged_at: datetime | None
    silenced_until: datetime | None
    silence_reason: str | None
    resolved_at: datetime | None

    @classmethod
    def of(cls, alert: Alert) -> Self:
        message_vi, message_en = alert.messages()
        return cls(
            id=alert.id,
            site=alert.site,
            meter=alert.meter,
            detector=alert.detector,
            rule=alert.rule,
            status=alert.status,
            start=to_datetime(alert.start_ms),
            end=_optional_datetime(alert.end_ms),
            detected_at=to_datetime(alert.detected_at),
            raised_at=to_datetime(alert.raised_at),
            raised_late=alert.raised_late,
            last_seen=to_datetime(alert.last_seen),
            count=alert.count,
            wasted_kwh=alert.wasted_kwh,
            cost_vnd=alert.cost_vnd,
            tariff_vnd_per_kwh=alert.tariff_vnd_per_kwh,
            magnitude=alert.magnitude,
            message_vi=message_vi,
            message_en=message_en,
            acknowledged_at=_optional_datetime(alert.acknowledged_at),
            silenced_until=_optional_datetime(alert.silenced_until),
            silence_reason=alert.silence_reason,
            resolved_at=_optional_datetime(alert.resolved_at),
        )


def _optional_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else to_datetime(ms)


class AlertNotice(BaseModel):
    """What a channel is told when an alert opens or resolves (the webhook's JSON body)."""

    kind: Literal["alert.opened", "alert.resolved"]
    alert: AlertOut


@dataclass(frozen=True)
class AlertChange:
    """What :meth:`AlertStore.apply` did; only openings and resolutions are notified."""

    kind: ChangeKind
    alert: Alert

    @property
    def notifies(self) -> bool:
        return self.kind in (ChangeKind.OPENED, ChangeKind.RESOLVED)


@dataclass(frozen=True)
class OutboxRow:
    """A notification waiting for its channel."""

    id: int
    channel: str
    kind: str
    body: str
    attempts: int


class AlertError(Exception):
    """A lifecycle operation the store refuses; the message says why."""


class UnknownAlert(AlertError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"no alert with id {alert_id}")


class AlertConflict(AlertError):
    """The alert is not in a state that allows the operation."""


class InvalidSilence(AlertError):
    """The silence asked for makes no sense (e.g. it ends in the past)."""


@dataclass(frozen=True)
class AlertQuery:
    """Filters of :meth:`AlertStore.alerts`; None = any. [start_ms, end_ms) selects alerts overlapping it."""

    status: AlertStatus | None = None
    detector: Detector | None = None
    site: str | None = None
    meter: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    before_id: int | None = None
    limit: int = 100


class AlertStore:
    """Alerts and their notification outbox, on a connection of its own to the ledger's file.

    Methods are synchronous and serialised by a lock; async callers use ``asyncio.to_thread``.

    Args:
        path: The ledger's SQLite file; the alert tables are created if missing.
        settings: Tariff and lateness threshold used by :meth:`apply`.
        channels: Names of the notification channels configured; each notification gets a row per channel.
        clock: Wall-clock time, UTC ms.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        settings: AlertSettings | None = None,
        channels: Sequence[str] = (),
        clock: Clock = wall_clock_ms,
    ) -> None:
        self._settings = settings or AlertSettings()
        self._channels = tuple(channels)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def apply(self, finding: Finding) -> AlertChange:
        """Open, update or resolve the alert of the finding's (site, meter, detector, rule)."""
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM alerts WHERE site = ? AND meter = ? AND detector = ? AND rule = ?"
                " AND status != 'resolved'",
                (finding.site, finding.meter, finding.detector.value, finding.rule),
            ).fetchone()
            if row is None:
                replayed = self._resolved_occurrence(db, finding)
                if replayed is not None:
                    return AlertChange(ChangeKind.UNCHANGED, replayed)
                alert_id = self._insert(db, finding, now)
                kind = ChangeKind.RESOLVED if finding.end_ms is not None else ChangeKind.OPENED
            else:
                alert_id = row["id"]
                kind = self._merge(db, _alert(row), finding, now)
            alert = _alert(db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone())
            change = AlertChange(kind, alert)
            if change.notifies:
                notice = AlertNotice(
                    kind="alert.opened" if kind is ChangeKind.OPENED else "alert.resolved",
                    alert=AlertOut.of(alert),
                )
                due = max(now, alert.silenced_until or now)
                self._enqueue(db, notice.kind, notice.model_dump_json(), due, alert_id)
            return change

    def _resolved_occurrence(self, db: sqlite3.Connection, finding: Finding) -> Alert | None:
        """The resolved alert this finding was already merged into (a replay), if any."""
        row = db.execute(
            "SELECT * FROM alerts WHERE site = ? AND meter = ? AND detector = ? AND rule = ?"
            " AND occurrence_start_ms = ? AND status = 'resolved' ORDER BY id DESC LIMIT 1",
            (finding.site, finding.meter, finding.detector.value, finding.rule, finding.start_ms),
        ).fetchone()
        return None if row is None else _alert(row)

    def _insert(self, db: sqlite3.Connection, finding: Finding, now: int) -> int:
        ended = finding.end_ms is not None
        cursor = db.execute(
            "INSERT INTO alerts (site, meter, detector, rule, status, start_ms, end_ms, detected_at,"
            " raised_at, raised_late, last_seen, count, occurrence_start_ms, occurrence_kwh, prior_kwh,"
            " occurrence_vnd, prior_vnd, tariff_vnd_per_kwh, magnitude, finding_en, finding_vi, resolved_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, 0, ?, 0, ?, ?, ?, ?, ?)",
            (
                finding.site,
                finding.meter,
                finding.detector.value,
                finding.rule,
                (AlertStatus.RESOLVED if ended else AlertStatus.OPEN).value,
                finding.start_ms,
                finding.end_ms,
                finding.detected_at,
                now,
                now - finding.detected_at > self._settings.late_after_s * 1000,
                finding.detected_at,
                finding.start_ms,
                finding.wasted_kwh,
                self._cost(finding),
                self._settings.tariff_vnd_per_kwh,
                finding.magnitude,
                finding.message_en,
                finding.message_vi,
                now if ended else None,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _merge(self, db: sqlite3.Connection, alert: Alert, finding: Finding, now: int) -> ChangeKind:
        """Fold a repeat into the active alert. A finding of the current occurrence carries its waste so
        far; a newer occurrence adds to the total; an older one (a replay) changes nothing."""
        if finding.start_ms < alert.occurrence_start_ms:
            return ChangeKind.UNCHANGED
        new_occurrence = finding.start_ms > alert.occurrence_start_ms
        prior = alert.prior_kwh + alert.occurrence_kwh if new_occurrence else alert.prior_kwh
        prior_vnd = alert.prior_vnd + alert.occurrence_vnd if new_occurrence else alert.prior_vnd
        kwh = finding.wasted_kwh if new_occurrence else max(alert.occurrence_kwh, finding.wasted_kwh)
        vnd = self._cost(finding) if new_occurrence else max(alert.occurrence_vnd, self._cost(finding))
        ended = finding.end_ms is not None
        updated = alert.model_copy(
            update={
                "status": AlertStatus.RESOLVED if ended else alert.status,
                "end_ms": finding.end_ms,
                "last_seen": max(alert.last_seen, finding.detected_at),
                "occurrence_start_ms": finding.start_ms,
                "occurrence_kwh": kwh,
                "prior_kwh": prior,
                "occurrence_vnd": vnd,
                "prior_vnd": prior_vnd,
                "tariff_vnd_per_kwh": self._settings.tariff_vnd_per_kwh,
                "magnitude": finding.magnitude,
                "finding_en": finding.message_en,
                "finding_vi": finding.message_vi,
            }
        )
        if updated == alert:
            return ChangeKind.UNCHANGED
        db.execute(
            "UPDATE alerts SET status = ?, end_ms = ?, last_seen = ?, count = count + 1,"
            " occurrence_start_ms = ?, occurrence_kwh = ?, prior_kwh = ?, occurrence_vnd = ?, prior_vnd = ?,"
            " tariff_vnd_per_kwh = ?,"
            " magnitude = ?, finding_en = ?, finding_vi = ?, resolved_at = ? WHERE id = ?",
            (
                updated.status.value,
                updated.end_ms,
                updated.last_seen,
                updated.occurrence_start_ms,
                updated.occurrence_kwh,
                updated.prior_kwh,
                updated.occurrence_vnd,
                updated.prior_vnd,
                updated.tariff_vnd_per_kwh,
                updated.magnitude,
                updated.finding_en,
                updated.finding_vi,
                now if ended else None,
                alert.id,
            ),
        )
        if ended:  # one notice says it all: an opening still waiting (silenced, channel down) is dropped
            db.execute("DELETE FROM alert_outbox WHERE alert_id = ? AND kind = 'alert.opened'", (alert.id,))
            return ChangeKind.RESOLVED
        return ChangeKind.UPDATED

    def _cost(self, finding: Finding) -> float:
        """The finding's own cost (the detectors know the site's time-of-use bands), else the flat rate."""
        if finding.cost_vnd > 0 or finding.wasted_kwh == 0:
            return finding.cost_vnd
        return finding.wasted_kwh * self._settings.tariff_vnd_per_kwh

    def acknowledge(self, alert_id: int) -> Alert:
        """Someone is on it: open -> acknowledged."""
        with self._transaction() as db:
            alert = self._active(db, alert_id, "acknowledge")
            if alert.status is AlertStatus.ACKNOWLEDGED:
                raise AlertConflict(f"alert {alert_id} is already acknowledged")
            db.execute(
                "UPDATE alerts SET status = ?, acknowledged_at = ? WHERE id = ?",
                (AlertStatus.ACKNOWLEDGED.value, self._clock(), alert_id),
            )
            return self._get(db, alert_id)

    def silence(self, alert_id: int, *, until_ms: int, reason: str) -> Alert:
        """Hold back the alert's notifications until `until_ms` (those waiting are postponed too)."""
        now = self._clock()
        if until_ms <= now:
            raise InvalidSilence(f"'until' ({local_text(until_ms)}) is not in the future")
        with self._transaction() as db:
            self._active(db, alert_id, "silence")
            db.execute(
                "UPDATE alerts SET silenced_until = ?, silence_reason = ? WHERE id = ?",
                (until_ms, reason, alert_id),
            )
            db.execute(
                "UPDATE alert_outbox SET due_ms = max(due_ms, ?) WHERE alert_id = ?", (until_ms, alert_id)
            )
            return self._get(db, alert_id)

    def _active(self, db: sqlite3.Connection, alert_id: int, action: str) -> Alert:
        alert = self._get(db, alert_id)
        if alert.status is AlertStatus.RESOLVED:
            raise AlertConflict(f"alert {alert_id} is resolved; there is nothing to {action}")
        return alert

    def _get(self, db: sqlite3.Connection, alert_id: int) -> Alert:
        row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise UnknownAlert(alert_id)
        return _alert(row)

    def get(self, alert_id: int) -> Alert:
        with self._lock:
            return self._get(self._db, alert_id)

    def alerts(self, query: AlertQuery) -> list[Alert]:
        """Alerts matching `query`, newest first."""
        where, params = _where(query)
        sql = f"SELECT * FROM alerts WHERE {where} ORDER BY id DESC LIMIT ?"  # noqa: S608 - fixed clauses
        with self._lock:
            rows = self._db.execute(sql, [*params, query.limit]).fetchall()
        return [_alert(row) for row in rows]

    def sites_for_digest(self, day: date) -> list[str]:
        """Sites with an active alert or one that began on `day` (Vietnam time)."""
        start, end = local_day_ms(day)
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT site FROM alerts WHERE status != 'resolved' OR (start_ms >= ? AND start_ms < ?)"
                " ORDER BY site",
                (start, end),
            ).fetchall()
        return [row["site"] for row in rows]

    def enqueue(self, kind: str, body: str, *, due_ms: int | None = None) -> None:
        """Queue a notification (e.g. a digest) for every channel."""
        with self._transaction() as db:
            self._enqueue(db, kind, body, self._clock() if due_ms is None else due_ms, None)

    def enqueue_digests(self, day: date, bodies: list[str]) -> bool:
        """Queue the digests of `day` (one body per site) unless that day's were queued before; together
        with the record that they were, so a restart neither skips nor repeats a day."""
        with self._transaction() as db:
            done = db.execute(
                "INSERT OR IGNORE INTO digest_days VALUES (?, ?)", (day.isoformat(), self._clock())
            )
            if done.rowcount == 0:
                return False
            for body in bodies:
                self._enqueue(db, "digest", body, self._clock(), None)
            return True

    def _enqueue(
        self, db: sqlite3.Connection, kind: str, body: str, due_ms: int, alert_id: int | None
    ) -> None:
        db.executemany(
            "INSERT INTO alert_outbox (channel, kind, alert_id, due_ms, body) VALUES (?, ?, ?, ?, ?)",
            [(channel, kind, alert_id, due_ms, body) for channel in self._channels],
        )

    def due(self, channel: str, *, limit: int = 50) -> list[OutboxRow]:
        """The channel's notifications that may be sent now, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, channel, kind, body, attempts FROM alert_outbox WHERE channel = ? AND due_ms <= ?"
                " ORDER BY id LIMIT ?",
                (channel, self._clock(), limit),
            ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def next_due(self, channel: str) -> int | None:
        """When the channel's next waiting notification becomes due (UTC ms), if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT min(due_ms) FROM alert_outbox WHERE channel = ?", (channel,)
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def delivered(self, row_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM alert_outbox WHERE id = ?", (row_id,))

    def failed(self, row_id: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE alert_outbox SET attempts = attempts + 1 WHERE id = ?", (row_id,))


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


def _alert(row: sqlite3.Row) -> Alert:
    return Alert.model_validate(dict(row))
