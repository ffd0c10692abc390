"""What only a PostgreSQL ledger has: its schema versions kept in step with SQLite's, the readings' monthly
partitions with a default one, and the store's placeholders as psycopg's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from app.processes import PostgreSQL
from collector.alerts import AlertStore
from collector.cli import app as collector_cli
from collector.store import SCHEMA_VERSION, Ledger, LedgerReader, NewerLedger, Postgres, pg_schema, postgres
from collector.store.connection import redact
from collector.store.postgres import pg_sql
from tests.collector_support import batch, reading
from tests.ledger_support import LedgerAt

DAY_MS = 86_400_000
OLD = 1_104_537_600_000  # 2005-01-01


@pytest.fixture
def ledger_at_pg(postgresql: PostgreSQL, ledger_at: LedgerAt, backend: str) -> Callable[[str], Postgres]:
    """Ledgers on PostgreSQL only."""
    if backend != "postgresql":
        pytest.fail("ask for this fixture with the postgresql backend")

    def at(name: str) -> Postgres:
        where = ledger_at(name)
        assert isinstance(where, Postgres)
        return where

    return at


def query(where: Postgres, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(where.url) as db:
        return db.execute(sql, params).fetchall()


pg_only = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def test_the_postgresql_schema_is_at_the_same_version_as_sqlites() -> None:
    """A SQLite migration needs its PostgreSQL counterpart (pg_schema.MIGRATIONS): the versions move together."""
    assert pg_schema.BASE_VERSION + len(pg_schema.MIGRATIONS) == SCHEMA_VERSION


@pg_only
def test_both_backends_have_the_same_tables_and_columns_in_order(
    ledger_at_pg: Callable[[str], Postgres], tmp_path: Path
) -> None:
    """The store reads some tables with SELECT *: their columns must come in the same order on both."""
    where = ledger_at_pg("ledger")
    Ledger(where).close()
    rows = query(
        where,
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
        " AND c.table_name NOT LIKE 'readings\\_%%' AND c.table_name != 'kilowatch_schema'"
        " ORDER BY c.table_name, c.ordinal_position",
    )
    on_pg: dict[str, list[str]] = {}
    for table, column in rows:
        on_pg.setdefault(str(table), []).append(str(column))
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        on_sqlite = {
            name: [row[1] for row in db.execute(f"PRAGMA table_info({name})")]
            for name in names
            if not name.startswith("sqlite_")
        }
    assert on_pg == on_sqlite


@pg_only
def test_a_new_database_starts_at_the_current_version_and_a_newer_one_is_refused(
    ledger_at_pg: Callable[[str], Postgres],
) -> None:
    where = ledger_at_pg("ledger")
    Ledger(where).close()
    AlertStore(where).close()  # a second writer finds the work done
    assert query(where, "SELECT version FROM kilowatch_schema") == [(SCHEMA_VERSION,)]
    with psycopg.connect(where.url) as db:
        db.execute("UPDATE kilowatch_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(NewerLedger, match="newer than this release") as refused:
        Ledger(where)
    assert where.url.split("@")[0].split(":")[-1] not in str(refused.value)  # the password
    with pytest.raises(NewerLedger):
        AlertStore(where)


@pg_only
def test_readings_go_to_their_months_partition_and_odd_times_to_the_default_one(
    ledger_at_pg: Callable[[str], Postgres],
) -> None:
    where = ledger_at_pg("ledger")
    now_ms = 1_581_724_800_000  # 2020-02-15, long before the clock of the writer's own partitions
    db = postgres.open_writer(where)
    made = pg_schema.add_partitions(db, now_ms)
    assert made == ["readings_y2020m02", "readings_y2020m03", "readings_y2020m04"]
    assert pg_schema.add_partitions(db, now_ms) == []
    with Ledger(where) as ledger:
        ledger.ingest(
            batch(
                reading(now_ms, imp=1.0),
                reading(now_ms + 40 * DAY_MS, imp=2.0),  # March
                reading(OLD, imp=0.5),  # 2005: a clock set wrong
                reading(now_ms + 400 * DAY_MS, imp=3.0),  # March 2021
                seq=1,
            )
        )
    placed = query(where, "SELECT tableoid::regclass::text, ts FROM readings ORDER BY ts")
    assert placed == [
        ("readings_default", OLD),
        ("readings_y2020m02", now_ms),
        ("readings_y2020m03", now_ms + 40 * DAY_MS),
        ("readings_default", now_ms + 400 * DAY_MS),
    ]
    # Time moves on: the month of 2021's reading gets its partition, which takes it from the default one.
    assert pg_schema.add_partitions(db, now_ms + 400 * DAY_MS)[0] == "readings_y2021m03"
    db.close()
    assert query(
        where, "SELECT tableoid::regclass::text FROM readings WHERE ts = %s", now_ms + 400 * DAY_MS
    ) == [("readings_y2021m03",)]
    with LedgerReader(where) as reader:
        assert [r.ts for r in reader.readings("m1", 0, 2**62)] == [
            OLD, now_ms, now_ms + 40 * DAY_MS, now_ms + 400 * DAY_MS
        ]  # fmt: skip


@pg_only
def test_only_an_empty_month_partition_ending_by_the_bound_is_dropped(
    ledger_at_pg: Callable[[str], Postgres],
) -> None:
    where = ledger_at_pg("ledger")
    now_ms = 1_581_724_800_000  # 2020-02-15
    db = postgres.open_writer(where)
    pg_schema.add_partitions(db, now_ms)  # February to April 2020
    with Ledger(where) as ledger:  # a reading in March, one in 2005
        ledger.ingest(batch(reading(now_ms + 30 * DAY_MS, imp=1.0), reading(OLD, imp=0.5), seq=1))

    def drop(before_ms: int) -> list[str]:
        db.begin()
        dropped = pg_schema.drop_partitions(db, before_ms=before_ms)
        db.execute("COMMIT")
        return dropped

    march, april = pg_schema.month_bounds(2020, 3)
    may = pg_schema.month_bounds(2020, 4)[1]
    assert drop(march - 1) == []  # February has not ended by then
    assert drop(april) == ["readings_y2020m02"]  # March holds a reading; April ends later
    assert drop(may + 400 * DAY_MS) == ["readings_y2020m04"]  # March still holds it; never the default
    db.close()
    assert query(where, "SELECT tableoid::regclass::text, ts FROM readings ORDER BY ts") == [
        ("readings_default", OLD), ("readings_y2020m03", now_ms + 30 * DAY_MS)
    ]  # fmt: skip


@pg_only
def test_the_writer_keeps_partitions_ahead_of_the_clock(ledger_at_pg: Callable[[str], Postgres]) -> None:
    where = ledger_at_pg("ledger")
    Ledger(where).close()
    months = query(
        where, "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'readings\\_y%%'"
    )
    assert len(months) == pg_schema.MONTHS_AHEAD + 1
    assert query(where, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass") == [
        (pg_schema.MONTHS_AHEAD + 2,)  # and the default one
    ]


@pg_only
def test_a_statement_without_parameters_keeps_its_percent_signs(
    ledger_at_pg: Callable[[str], Postgres],
) -> None:
    db = postgres.open_reader(ledger_at_pg("ledger"))
    try:
        assert db.execute("SELECT 7 % 3, '100%'").fetchone() == (1, "100%")
    finally:
        db.close()


def test_sqlite_placeholders_become_psycopgs_and_quoted_text_is_left_alone() -> None:
    assert pg_sql("SELECT * FROM t WHERE a = ? AND b = :b AND c LIKE 'x?%' AND \"d:e\" = 1") == (
        "SELECT * FROM t WHERE a = %s AND b = %(b)s AND c LIKE 'x?%%' AND \"d:e\" = 1"
    )
    assert pg_sql("SELECT 5 % 2, 'it''s ?'") == "SELECT 5 %% 2, 'it''s ?'"
    assert pg_sql("SELECT CAST(x AS json) -> 'a'") == "SELECT CAST(x AS json) -> 'a'"


def test_a_url_is_shown_without_its_password() -> None:
    assert redact("postgresql://kw:s3cret@db:5432/ledger?sslmode=require&password=s3cret") == (
        "postgresql://kw@db:5432/ledger?sslmode=require"
    )
    assert str(Postgres("postgresql://kw:s3cret@db/ledger")) == "postgresql://kw@db/ledger"
    assert "s3cret" not in repr(Postgres("postgresql://kw:s3cret@db/ledger"))


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_backup_and_restore_send_a_postgresql_ledger_to_pg_dump(tmp_path: Path, command: str) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text("ledger:\n  url: postgresql://kw:s3cret@db.example.vn/kilowatch\n")
    args = ["backup", "--out", str(tmp_path / "copy.db")] if command == "backup" else ["restore", "copy.db"]
    result = CliRunner().invoke(collector_cli, [*args, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "postgresql://kw@db.example.vn/kilowatch" in result.output
    assert "pg_dump" in result.output
    assert "s3cret" not in result.output
