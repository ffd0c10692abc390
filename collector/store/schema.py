"""The ledger file's tables and their versioned migrations, keyed on ``PRAGMA user_version``.

``MIGRATIONS[v]`` takes a file at version ``v`` to ``v + 1``. Version 0 is a new file or one written by a
release before versioning (b5b063c and older): migration 1 creates the tables of that release with
``IF NOT EXISTS``, so it creates a new file and only stamps an old one. A later change of the schema is a
new entry at the end, never an edit of one that has shipped.

Every connection that writes (see :mod:`collector.store.connection`) runs :func:`migrate` when it opens;
one ``BEGIN IMMEDIATE`` makes whichever comes second find the work done.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path

from collector.detectors.series import MOVING
from kilowatch.quantities import ACTIVE_POWER, ENERGY_EXPORT, ENERGY_IMPORT

# `readings` keeps its rowid: its rows carry every value as JSON (~1 kB), too big for a WITHOUT ROWID
# b-tree, and a batch appends them in rowid order instead of into one leaf per meter.
_V1 = f"""
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    profile TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    meter_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    {ENERGY_IMPORT} REAL,
    {ENERGY_EXPORT} REAL,
    {ACTIVE_POWER} REAL,
    "values" TEXT NOT NULL,
    quality TEXT NOT NULL,
    clock TEXT NOT NULL,
    PRIMARY KEY (meter_id, ts)
);
CREATE TABLE IF NOT EXISTS latest (
    meter_id TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    "values" TEXT NOT NULL,
    quality TEXT NOT NULL,
    value_quality TEXT NOT NULL,
    clock TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS intervals (
    meter_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    {ENERGY_IMPORT} REAL,
    {ENERGY_EXPORT} REAL,
    max_kw REAL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (meter_id, start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counter_events (
    meter_id TEXT NOT NULL,
    quantity TEXT NOT NULL,
    kind TEXT NOT NULL,
    prev_ts INTEGER NOT NULL,
    prev_value REAL NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (meter_id, quantity, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gateways (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    state TEXT NOT NULL,
    ts INTEGER NOT NULL,
    agent_version TEXT NOT NULL,
    meters TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway)
);
-- Each change of a gateway's state (a birth, a last will), in the order the collector received them.
CREATE TABLE IF NOT EXISTS gateway_states (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, received_at, state)
) WITHOUT ROWID;
-- spool is '' for agents that send no spool_id.
CREATE TABLE IF NOT EXISTS batches (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    spool TEXT NOT NULL,
    seq INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, spool, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_gaps (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    spool TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    detected_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, spool, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clock_anchors (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    offset_ms INTEGER NOT NULL,
    synced_at INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS boot_clocks (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    offset_ms INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clock_steps (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    start_ts INTEGER NOT NULL,
    end_ts INTEGER NOT NULL,
    step_ms INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, start_ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT,
    mono_ms INTEGER,
    meter_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    reading TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS quarantine_once
    ON quarantine (meter_id, ts, coalesce(boot_id, ''), coalesce(mono_ms, -1));
CREATE INDEX IF NOT EXISTS quarantine_by_boot ON quarantine (site, gateway, boot_id);
CREATE TABLE IF NOT EXISTS gateway_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    readings INTEGER NOT NULL,
    oldest_ts INTEGER,
    newest_ts INTEGER,
    detail TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (site, gateway, ts, kind, readings)
);
CREATE TABLE IF NOT EXISTS tsdb_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lines TEXT NOT NULL,
    points INTEGER NOT NULL
);
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

_V2 = """
CREATE TABLE report_months (
    month TEXT PRIMARY KEY,
    queued_at INTEGER NOT NULL
);
"""
"""The months whose report e-mails (the Directive 20 workbook to each unit's manager) were queued."""

_V3 = """
CREATE TABLE access_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    sites TEXT,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE access_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    sites TEXT,
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE access_sessions (
    token_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES access_users(name) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX access_sessions_user ON access_sessions(user);
"""
"""Access control: users (argon2id password hashes), API keys and browser sessions (SHA-256 of their secrets)."""

# Each meter is bound to one gateway (provisioned, else the first it is seen from); a meter seen before is
# bound where its newest reading came from. `latest` keeps why each bad value of the reading is bad.
_V4 = """
CREATE TABLE meter_owners (
    meter_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    since INTEGER NOT NULL,
    how TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meter_owners SELECT meter_id, site, gateway, last_seen, 'first_seen' FROM meters;
ALTER TABLE latest ADD COLUMN value_reasons TEXT NOT NULL DEFAULT '{}'
"""

# Prices come from the sites file alone: an alert's cost is its findings', no flat rate is kept beside it.
_V5 = """
ALTER TABLE alerts DROP COLUMN tariff_vnd_per_kwh
"""

# Readings keep only what the ledger's readers use (the TSDB keeps every quantity; `latest` keeps the newest
# reading whole): counters and power as columns, the quantities that tell a frozen meter (MOVING) as
# float32s in one blob, quality and clock only when not good/synced. Meters are interned as small integers.
# Retention prunes batches by when they were received (collector.store.retention).
# About 70 bytes a reading instead of ~620: small enough for a WITHOUT ROWID b-tree keyed by (meter, ts).
# Readings older than a few days are packed by retention into one compressed block per meter and local day
# (`reading_blocks`, see collector.store.blocks; ~30 bytes a reading): a rowid table, its rows being large.
# `pack_moving` is a function :func:`migrate` gives the connection (SQL has no float32).
_V6 = f"""
CREATE TABLE meter_keys (
    id INTEGER PRIMARY KEY,
    meter_id TEXT NOT NULL UNIQUE
);
INSERT INTO meter_keys (meter_id) SELECT meter_id FROM meters UNION SELECT meter_id FROM readings;
CREATE TABLE readings_v6 (
    meter INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    {ENERGY_IMPORT} REAL,
    {ENERGY_EXPORT} REAL,
    {ACTIVE_POWER} REAL,
    moving BLOB,
    quality TEXT,
    clock TEXT,
    PRIMARY KEY (meter, ts)
) WITHOUT ROWID;
INSERT INTO readings_v6
    SELECT k.id, r.ts, r.{ENERGY_IMPORT}, r.{ENERGY_EXPORT}, r.{ACTIVE_POWER}, pack_moving(r."values"),
        nullif(r.quality, 'good'), nullif(r.clock, 'synced')
    FROM readings r JOIN meter_keys k ON k.meter_id = r.meter_id;
DROP TABLE readings;
ALTER TABLE readings_v6 RENAME TO readings;
CREATE TABLE reading_blocks (
    meter INTEGER NOT NULL,
    day_ms INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (meter, day_ms)
);
CREATE INDEX batches_by_received ON batches (received_at)
"""  # noqa: S608 - column names are constants

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
"""``MIGRATIONS[v]`` takes ``user_version`` v to v + 1: statements separated by ``;`` (none inside one)."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The ``user_version`` of a ledger this code wrote or upgraded."""


class NewerLedger(sqlite3.DatabaseError):
    """The file was written by a newer release; this code does not know its schema. A database error, so
    callers that report a ledger they cannot open (``sqlite3.Error``) report this one too."""

    def __init__(self, path: Path | str, version: int) -> None:
        super().__init__(
            f"{path}: ledger schema version {version} is newer than this release's {SCHEMA_VERSION}"
        )
        self.path = path
        self.version = version


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


MOVING_FORMAT = struct.Struct(f"<{len(MOVING)}f")
"""`readings.moving`: the :data:`~collector.detectors.series.MOVING` quantities as little-endian float32s,
NaN where missing. The frozen rule asks only whether they repeat exactly and whether any is non-zero, which
float32 keeps (equal values stay equal; meters give no two values within 1e-7 of each other)."""

NAN = float("nan")
_NANS = (NAN,) * len(MOVING)


def pack_moving(values: dict[str, float]) -> bytes | None:
    """The `moving` blob of a reading's values; None when it carries none of them. (Looked up in C, no
    Python per value: the ingest packs one per reading.)"""
    if values.keys().isdisjoint(MOVING):
        return None
    return MOVING_FORMAT.pack(*map(values.get, MOVING, _NANS))


def _pack_moving_json(values: str) -> bytes | None:
    return pack_moving(json.loads(values))


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` in one transaction (`db` is in autocommit mode); a current
    file costs no write lock."""
    if version(db) == SCHEMA_VERSION:
        return
    db.create_function("pack_moving", 1, _pack_moving_json, deterministic=True)
    db.execute("BEGIN IMMEDIATE")
    try:
        found = version(db)
        if found > SCHEMA_VERSION:
            raise NewerLedger(path, found)
        for script in MIGRATIONS[found:]:
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
