"""What arrived how: batches seen per (site, gateway, spool, seq), the seq gaps between them, and refused
messages."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

MAX_REJECTED_PAYLOAD = 256 * 1024
"""Bytes of a rejected payload kept; the rest is cut off (the original size is stored beside it)."""

BatchKey = tuple[str, str, str]
"""(site, gateway, spool); spool is '' for agents that send no spool_id."""


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """A refused MQTT message, kept for inspection (its first MAX_REJECTED_PAYLOAD bytes)."""

    topic: str
    reason: str
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RejectedRow:
    id: int
    received_at: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int


@dataclass(frozen=True, slots=True)
class SeqGapRow:
    """Batches ``first_seq..last_seq`` of a spool that never arrived."""

    site: str
    gateway: str
    spool_id: str | None
    first_seq: int
    last_seq: int
    detected_at: int


def seen(db: sqlite3.Connection, key: BatchKey, seq: int) -> bool:
    row = db.execute(
        "SELECT 1 FROM batches WHERE site = ? AND gateway = ? AND spool = ? AND seq = ?", (*key, seq)
    ).fetchone()
    return row is not None


def record_batch(db: sqlite3.Connection, key: BatchKey, seq: int, readings: int, received_at: int) -> None:
    db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)", (*key, seq, readings, received_at))


def track_seq(db: sqlite3.Connection, key: BatchKey, seq: int, received_at: int) -> int:
    """Record the gap a new seq reveals, or close the one a late seq fills; returns the change in missing
    batches. The first seq seen of a spool reveals nothing (the collector may be newer than the spool)."""
    (highest,) = db.execute(
        "SELECT max(seq) FROM batches WHERE site = ? AND gateway = ? AND spool = ?", key
    ).fetchone()
    if highest is None:
        return 0
    if seq > highest + 1:
        db.execute(
            "INSERT INTO seq_gaps VALUES (?, ?, ?, ?, ?, ?)", (*key, highest + 1, seq - 1, received_at)
        )
        return int(seq - highest - 1)
    gap = db.execute(
        "DELETE FROM seq_gaps WHERE site = ? AND gateway = ? AND spool = ? AND first_seq <= ? AND last_seq >= ?"
        " RETURNING first_seq, last_seq, detected_at",
        (*key, seq, seq),
    ).fetchone()
    if gap is None:
        return 0
    first, last, detected_at = gap
    for lo, hi in ((first, seq - 1), (seq + 1, last)):
        if lo <= hi:
            db.execute("INSERT INTO seq_gaps VALUES (?, ?, ?, ?, ?, ?)", (*key, lo, hi, detected_at))
    return -1


def reject(db: sqlite3.Connection, message: RejectedMessage, received_at: int) -> None:
    db.execute(
        "INSERT INTO rejected (received_at, topic, reason, detail, payload, payload_size)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (received_at, message.topic, message.reason, message.detail, message.payload[:MAX_REJECTED_PAYLOAD],
         len(message.payload)),
    )  # fmt: skip
