"""The outboxes: rows written in the transaction that makes them due, drained by whoever delivers them.

``tsdb_outbox`` holds stored readings as the TSDB's line protocol (one row per message, written by the
ledger's writer, drained by the TSDB writer); ``alert_outbox`` holds notifications, one row per channel
(written with the alert change that causes them, drained by the notifiers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from collector.store.connection import Db


@dataclass(frozen=True, slots=True)
class TsdbOutboxRow:
    id: int
    lines: str
    points: int


@dataclass(frozen=True, slots=True)
class NotificationRow:
    """A notification waiting for its channel."""

    id: int
    channel: str
    kind: str
    body: str
    attempts: int


def add_points(db: Db, lines: list[str]) -> None:
    db.execute("INSERT INTO tsdb_outbox (lines, points) VALUES (?, ?)", ("\n".join(lines), len(lines)))


def take_points(db: Db, max_points: int) -> list[TsdbOutboxRow]:
    """The oldest rows, about `max_points` points' worth (at least one row)."""
    rows: list[TsdbOutboxRow] = []
    total = 0
    for row in db.execute("SELECT id, lines, points FROM tsdb_outbox ORDER BY id"):
        if rows and total + row[2] > max_points:
            break
        rows.append(TsdbOutboxRow(*row))
        total += row[2]
    return rows


def points_delivered(db: Db, last_id: int) -> None:
    db.execute("DELETE FROM tsdb_outbox WHERE id <= ?", (last_id,))


def points_backlog(db: Db) -> tuple[int, int]:
    """(rows, points) waiting."""
    rows, points = db.execute("SELECT count(*), coalesce(sum(points), 0) FROM tsdb_outbox").fetchone()
    return int(rows), int(points)


def notify(db: Db, channels: Sequence[str], kind: str, body: str, due_ms: int, alert_id: int | None) -> None:
    """Queue a notification for every channel."""
    db.executemany(
        "INSERT INTO alert_outbox (channel, kind, alert_id, due_ms, body) VALUES (?, ?, ?, ?, ?)",
        [(channel, kind, alert_id, due_ms, body) for channel in channels],
    )


def drop_notifications(db: Db, alert_id: int, kind: str) -> None:
    db.execute("DELETE FROM alert_outbox WHERE alert_id = ? AND kind = ?", (alert_id, kind))


def postpone_notifications(db: Db, alert_id: int, until_ms: int) -> None:
    db.execute(
        f"UPDATE alert_outbox SET due_ms = {db.dialect.greatest('due_ms', '?')} WHERE alert_id = ?",  # noqa: S608 - no input in it
        (until_ms, alert_id),
    )


def due_notifications(db: Db, channel: str, now_ms: int, limit: int) -> list[NotificationRow]:
    rows = db.execute(
        "SELECT id, channel, kind, body, attempts FROM alert_outbox WHERE channel = ? AND due_ms <= ?"
        " ORDER BY id LIMIT ?",
        (channel, now_ms, limit),
    ).fetchall()
    return [NotificationRow(*row) for row in rows]


def next_notification_due(db: Db, channel: str) -> int | None:
    (due,) = db.execute("SELECT min(due_ms) FROM alert_outbox WHERE channel = ?", (channel,)).fetchone()
    return None if due is None else int(due)


def notification_delivered(db: Db, row_id: int) -> None:
    db.execute("DELETE FROM alert_outbox WHERE id = ?", (row_id,))


def notification_failed(db: Db, row_id: int) -> None:
    db.execute("UPDATE alert_outbox SET attempts = attempts + 1 WHERE id = ?", (row_id,))
