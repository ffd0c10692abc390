"""Versioned migrations: a ledger written by the release before versioning (b5b063c) opens and is upgraded
in place, its rows readable and writable by the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from collector.alerts import AlertStore
from collector.store import SCHEMA_VERSION, AlertQuery, AlertStatus, Ledger, LedgerReader, NewerLedger
from tests.collector_support import at, batch, reading
from tests.paths import FIXTURES

FIXTURE = FIXTURES / "ledger_v1.sql"


def old_ledger(path: Path) -> Path:
    """A ledger as release b5b063c left it: its schema (user_version 0) and a few rows of each kind."""
    with sqlite3.connect(path) as db:
        db.executescript(FIXTURE.read_text())
        db.execute("INSERT INTO meters VALUES ('m1', 'site1', 'gw1', 'pm5xxx', ?, ?)", (at(10), at(10, 5)))
        db.executemany(
            "INSERT INTO readings VALUES ('m1', ?, ?, NULL, ?, ?, 'good', 'synced')",
            [
                (at(10), 100.0, 2000.0, '{"energy_import_kwh": 100.0, "active_power_w": 2000.0}'),
                (at(10, 5), 100.5, 3000.0, '{"energy_import_kwh": 100.5, "active_power_w": 3000.0}'),
            ],
        )
        db.execute(
            "INSERT INTO latest VALUES ('m1', ?, ?, 'good', '{}', 'synced')",
            (at(10, 5), '{"energy_import_kwh": 100.5, "active_power_w": 3000.0}'),
        )
        db.execute("INSERT INTO intervals VALUES ('m1', ?, 0.5, NULL, 3.0, 2)", (at(10),))
        db.execute("INSERT INTO batches VALUES ('site1', 'gw1', 'abcdef01', 0, 2, ?)", (at(10, 6),))
        db.execute(
            "INSERT INTO alerts (site, meter, detector, rule, status, start_ms, end_ms, detected_at, raised_at,"
            " raised_late, last_seen, count, occurrence_start_ms, occurrence_kwh, prior_kwh, occurrence_vnd,"
            " prior_vnd, tariff_vnd_per_kwh, magnitude, finding_en, finding_vi)"
            " VALUES ('site1', 'm1', 'after_hours', 'R4', 'open', ?, NULL, ?, ?, 0, ?, 1, ?, 3.0, 0, 6000, 0,"
            " 2000, 6.0, 'On after hours.', 'Chạy ngoài giờ.')",
            (at(19), at(19, 30), at(19, 31), at(19, 30), at(19)),
        )
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
    return path


def test_an_old_ledger_is_upgraded_in_place_and_its_rows_read(tmp_path: Path) -> None:
    path = old_ledger(tmp_path / "kilowatch.db")
    with Ledger(path) as ledger:
        # The writer's state of m1 comes from the old rows: the next reading extends its series.
        ledger.ingest(batch(reading(at(10, 10), imp=101.0, power_w=4000.0), seq=1))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        columns = {row[1] for row in db.execute("PRAGMA table_info(alerts)")}
        assert "tariff_vnd_per_kwh" not in columns  # prices come from the sites file alone
    with LedgerReader(path) as r:
        assert [(x.ts, x.values["energy_import_kwh"]) for x in r.readings("m1", at(10), at(11))] == [
            (at(10), 100.0), (at(10, 5), 100.5), (at(10, 10), 101.0)
        ]  # fmt: skip
        [interval] = r.intervals("m1", at(10), at(10, 15))
        assert interval.energy_import_kwh == pytest.approx(1.0)
        assert (interval.max_kw, interval.samples) == (4.0, 3)
        meter = r.meter("m1")
        assert meter is not None
        assert (meter.first_seen, meter.last_seen) == (at(10), at(10, 10))
        latest = r.latest("m1")
        assert latest is not None
        assert latest.ts == at(10, 10)
        assert r.stored_batches() == 2
    with AlertStore(path) as store:
        [alert] = store.alerts(AlertQuery())
        assert (alert.meter, alert.status, alert.occurrence_kwh, alert.cost_vnd) == (
            "m1",
            AlertStatus.OPEN,
            3.0,
            6000,
        )
        assert store.acknowledge(alert.id).status is AlertStatus.ACKNOWLEDGED


def test_a_new_ledger_has_the_old_releases_tables(tmp_path: Path) -> None:
    """Migration 1 is that release's schema: a new file and an upgraded old one have the same tables."""

    def tables(path: Path) -> dict[str, str]:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        return {name: " ".join(sql.replace("IF NOT EXISTS ", "").split()) for name, sql in rows}

    Ledger(tmp_path / "new.db").close()
    Ledger(old_ledger(tmp_path / "old.db")).close()
    assert tables(tmp_path / "new.db") == tables(tmp_path / "old.db")


def test_a_ledger_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kilowatch.db"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(NewerLedger, match="newer than this release"):
        Ledger(path)
    with pytest.raises(NewerLedger):
        AlertStore(path)


def test_migration_6_keeps_what_detection_reads_and_switches_to_incremental_vacuum(tmp_path: Path) -> None:
    """Readings of an old ledger move to the compact rows: counters and power exact, the quantities that
    tell a frozen meter as float32; the file is rewritten once so that retention can give space back."""
    path = old_ledger(tmp_path / "kilowatch.db")
    values = {
        "energy_import_kwh": 101.25,
        "active_power_w": 2500.5,
        "voltage_l1_v": 230.1,
        "current_l2_a": 4.2,
    }
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO readings VALUES ('m1', ?, 101.25, NULL, 2500.5, ?, 'stale', 'unknown')",
            (at(10, 8), json.dumps(values | {"power_factor": 0.9})),
        )
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    with LedgerReader(path) as r:
        *_, row = r.readings("m1", at(10), at(11))
        samples = r.power_samples("m1", at(10), at(11))
    assert (row.ts, row.quality, row.clock) == (at(10, 8), "stale", "unknown")
    assert row.values.keys() == values.keys()  # power_factor is the TSDB's alone
    assert (row.values["energy_import_kwh"], row.values["active_power_w"]) == (101.25, 2500.5)
    assert row.values["voltage_l1_v"] == pytest.approx(230.1, rel=1e-7)
    assert [s.ts for s in samples] == [at(10), at(10, 5), at(10, 8)]
    assert samples[-1].moving[0] == row.values["voltage_l1_v"]
    assert samples[-1].moving[5] == row.values["current_l2_a"]
    assert samples[0].moving == (None,) * 7  # the old row carried none of them
