"""What arrived how: batches seen per (site, gateway, spool, seq), the seq gaps between them, and refused
messages."""

from __future__ import annotations

from dataclasses import dataclass

from collector.store.connection import Db, Dialect

MAX_REJECTED_PAYLOAD = 4096
"""Bytes of a rejected payload kept: an excerpt to recognise it by (the reason's detail says where it is
wrong); the rest is cut off and the original size is stored beside it."""

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
class RejectedLimits:
    """How much of the refused messages the ledger keeps; beyond either bound the oldest go first."""

    max_bytes: int = 64 * 2**20
    """Their excerpts, details and topics together."""
    retention_ms: int = 30 * 86_400_000
    """Their age (by when they were received)."""


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


def seen(db: Db, key: BatchKey, seq: int) -> bool:
    row = db.execute(
        "SELECT 1 FROM batches WHERE site = ? AND gateway = ? AND spool = ? AND seq = ?", (*key, seq)
    ).fetchone()
    return row is not None


def record_batch(db: Db, key: BatchKey, seq: int, readings: int, received_at: int) -> None:
    db.execute(
        "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway, spool, seq)"
        " DO UPDATE SET readings = excluded.readings, received_at = excluded.received_at",
        (*key, seq, readings, received_at),
    )


MAX_SEQ_JUMP = 1_000_000
"""A spool's seq moving on by more than this is a new numbering (a spool epoch: a restored or hand-edited
spool, a bug, a forged seq), not that many missing batches: no spool holds a million batches (a batch a
minute for almost two years)."""


@dataclass(frozen=True, slots=True)
class SeqJump:
    """A seq further on than :data:`MAX_SEQ_JUMP` from the last one seen (None: the spool's first)."""

    previous: int | None
    seq: int


def track_seq(db: Db, key: BatchKey, seq: int, received_at: int) -> int | SeqJump:
    """Record the gap a new seq reveals, or close the one a late seq fills; returns the change in missing
    batches, or the :class:`SeqJump` it is (no gap recorded).

    The first seq seen of a spool counts from 0: a first seq of 30 means batches 0-29 never arrived (a
    broker that never queued them for this collector acknowledged them).
    """
    (highest,) = db.execute(
        "SELECT max(seq) FROM batches WHERE site = ? AND gateway = ? AND spool = ?", key
    ).fetchone()
    after = -1 if highest is None else int(highest)
    if seq - after - 1 > MAX_SEQ_JUMP:
        return SeqJump(None if highest is None else after, seq)
    if seq > after + 1:
        db.execute("INSERT INTO seq_gaps VALUES (?, ?, ?, ?, ?, ?)", (*key, after + 1, seq - 1, received_at))
        return seq - after - 1
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


def reject(db: Db, message: RejectedMessage, received_at: int) -> None:
    db.execute(
        "INSERT INTO rejected (received_at, topic, reason, detail, payload, payload_size)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (received_at, message.topic, message.reason, message.detail, message.payload[:MAX_REJECTED_PAYLOAD],
         len(message.payload)),
    )  # fmt: skip


_ROW_BYTES = {d: " + ".join(d.octet_length(c) for c in ("payload", "detail", "topic")) for d in Dialect}
_REJECTED_BYTES = {d: f"SELECT coalesce(sum({b}), 0) FROM rejected" for d, b in _ROW_BYTES.items()}  # noqa: S608 - constants only
_DROP_EXPIRED = {
    d: f"DELETE FROM rejected WHERE received_at < ? RETURNING {b}"  # noqa: S608 - idem
    for d, b in _ROW_BYTES.items()
}
_DROP_OLDEST = {
    d: "DELETE FROM rejected WHERE id <= (SELECT id FROM"  # noqa: S608 - idem
    f" (SELECT id, sum({b}) OVER (ORDER BY id) AS upto FROM rejected) AS kept"
    f" WHERE upto >= ? ORDER BY id LIMIT 1) RETURNING {b}"
    for d, b in _ROW_BYTES.items()
}


def rejected_bytes(db: Db) -> int:
    """What the kept refused messages weigh, as :class:`RejectedLimits` counts it."""
    (total,) = db.execute(_REJECTED_BYTES[db.dialect]).fetchone()
    return int(total)


def row_bytes(message: RejectedMessage) -> int:
    """What :func:`reject` adds to :func:`rejected_bytes`."""
    kept = len(message.payload[:MAX_REJECTED_PAYLOAD])
    return kept + len(message.detail.encode()) + len(message.topic.encode())


def drop_rejected(db: Db, *, at_least_bytes: int, before_ms: int) -> int:
    """Drop the kept refused messages received before `before_ms`, then the oldest others until at least
    `at_least_bytes` are gone in all; returns the bytes dropped."""
    dropped: int = sum(n for (n,) in db.execute(_DROP_EXPIRED[db.dialect], (before_ms,)))
    if dropped < at_least_bytes:
        dropped += sum(n for (n,) in db.execute(_DROP_OLDEST[db.dialect], (at_least_bytes - dropped,)))
    return dropped
