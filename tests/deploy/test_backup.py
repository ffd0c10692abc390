"""`kilowatch collector backup` and `restore` with real processes: a backup taken while a running collector
ingests is one consistent, intact state; restore refuses the ledger a running collector holds; restored into a
new collector, the copy is served exactly as the backup held it, and that collector keeps ingesting."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from app.processes import (
    UNBOUNDED_QUEUE,
    Mosquitto,
    Process,
    free_port,
    get_json,
    wait_until,
    write_collector_config,
)
from collector.backups import rotate
from collector.store import SCHEMA_VERSION, Ledger, LedgerReader
from collector.store.backup import BackupError, check
from kilowatch.mqtt_contract import SCHEMA_VERSION as WIRE_VERSION
from kilowatch.mqtt_contract import Channel, ClockState, Quality, Reading, ReadingsBatch, topic
from kilowatch.timebase import SLOT_MS
from tests.api_support import api_key

pytestmark = pytest.mark.services

METERS = ("m1", "m2")
START_MS = (int(time.time() * 1000) // SLOT_MS - 12) * SLOT_MS
"""Three hours ago, on a slot boundary: the last batch, 130 minutes on, is in the past at any minute of the slot
(from two hours back it reached up to 10 minutes into the future, which the time window refuses)."""
STEP_MS = 10_000
PER_BATCH = 6  # a minute of readings per meter in each batch


def kilowatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, check=False)


def batch(seq: int) -> bytes:
    """Batch `seq`: PER_BATCH readings of each meter, their import counters rising 0.01 kWh a reading."""
    readings = [
        Reading(
            meter=meter,
            profile="eastron-sdm630",
            ts=START_MS + i * STEP_MS,
            values={"energy_import_kwh": 1000 + i * 0.01, "active_power_w": 3600.0},
            quality=Quality.GOOD,
            clock=ClockState.SYNCED,
        )
        for i in range(seq * PER_BATCH, (seq + 1) * PER_BATCH)
        for meter in METERS
    ]
    return (
        ReadingsBatch(
            schema_version=WIRE_VERSION,
            site="s1",
            gateway="gw1",
            seq=seq,
            sent_at=int(time.time() * 1000),
            readings=readings,
        )
        .model_dump_json()
        .encode()
    )


class Collector:
    def __init__(self, tmp: Path, name: str, broker: Mosquitto) -> None:
        self.ledger = tmp / f"{name}.db"
        port = free_port()
        self.config = write_collector_config(
            tmp / f"{name}.yaml", broker, ledger=self.ledger, api_port=port, tsdb_url=None, client_id=name
        )
        self.api = f"http://127.0.0.1:{port}"
        self.process = Process(
            name,
            [sys.executable, "-m", "app", "collector", "run", "-c", str(self.config)],
            tmp / f"{name}.log",
        )

    def start(self) -> Collector:
        self.process.start()
        wait_until(
            lambda: get_json(f"{self.api}/healthz")["status"] == "ok", 30, f"{self.process.name} to connect"
        )
        self.key = api_key(self.ledger)
        return self

    def latest_ms(self, meter: str = "m1") -> int:
        try:
            ts = get_json(f"{self.api}/api/v1/meters/{meter}/latest", key=self.key)["ts"]
        except urllib.error.HTTPError:
            return 0
        return int(datetime.fromisoformat(ts).timestamp() * 1000)

    def intervals(self, meter: str) -> list[tuple[str, float | None]]:
        window = {
            "from": datetime.fromtimestamp(START_MS / 1000, UTC).isoformat(),
            "to": datetime.now(UTC).isoformat(),
        }
        found = get_json(
            f"{self.api}/api/v1/meters/{meter}/intervals?{urllib.parse.urlencode(window)}", key=self.key
        )
        return [(i["start"], i["energy_import_kwh"]) for i in found["intervals"]]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto.start(tmp_path / "mosquitto", extra_conf=UNBOUNDED_QUEUE)
    yield mosquitto
    mosquitto.stop()


async def publish(broker: Mosquitto, seqs: range, pause_s: float) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="s1.gw1") as client:
        for seq in seqs:
            await client.publish(topic("s1", "gw1", Channel.READINGS), batch(seq), qos=1)
            await asyncio.sleep(pause_s)


async def test_backup_mid_stream_and_restore_into_a_new_collector(tmp_path: Path, broker: Mosquitto) -> None:
    first = Collector(tmp_path, "first", broker).start()
    second = Collector(tmp_path, "second", broker)
    try:
        stream = asyncio.create_task(publish(broker, range(0, 120), 0.05))
        await asyncio.to_thread(
            wait_until, lambda: first.latest_ms() > START_MS + 30 * STEP_MS, 30, "ingestion"
        )
        result = await asyncio.to_thread(
            kilowatch, "collector", "backup", "-c", str(first.config), "--out", str(tmp_path / "copy.db")
        )
        assert result.returncode == 0, result.stderr
        assert not stream.done()  # taken mid-stream
        await stream
        last = START_MS + (120 * PER_BATCH - 1) * STEP_MS
        await asyncio.to_thread(wait_until, lambda: first.latest_ms() == last, 30, "the whole stream")

        assert check(tmp_path / "copy.db") == SCHEMA_VERSION  # intact, current schema
        with LedgerReader(tmp_path / "copy.db") as copy:
            held = {m: copy.latest(m) for m in METERS}
            counts = {m: copy.count_readings(m, 0, 2**62) for m in METERS}
            copied = {
                m: [(datetime.fromtimestamp(i.start_ms / 1000, UTC).isoformat().replace("+00:00", "Z"), i.energy_import_kwh) for i in copy.intervals(m, START_MS, last + SLOT_MS)]
                for m in METERS
            }  # fmt: skip
        assert all(row is not None for row in held.values())
        # One state of the file: both meters' readings come in the same batches, so a torn copy would differ.
        assert counts["m1"] == counts["m2"]
        assert 30 < counts["m1"] < 120 * PER_BATCH
        assert counts["m1"] % PER_BATCH == 0

        # The ledger a running collector holds is not replaced, even when told to.
        refused = kilowatch(
            "collector", "restore", str(tmp_path / "copy.db"), "-c", str(first.config), "--force"
        )
        assert refused.returncode == 1
        assert "open in another process" in refused.stderr
        # Neither is an existing file replaced without --force.
        second.ledger.write_bytes(b"")
        refused = kilowatch("collector", "restore", str(tmp_path / "copy.db"), "-c", str(second.config))
        assert "say so with --force" in refused.stderr
        done = kilowatch(
            "collector", "restore", str(tmp_path / "copy.db"), "-c", str(second.config), "--force"
        )
        assert done.returncode == 0, done.stderr
        assert f"schema version {SCHEMA_VERSION}" in done.stdout

        second.start()
        for meter in METERS:
            row = held[meter]
            assert row is not None
            served = get_json(f"{second.api}/api/v1/meters/{meter}/latest", key=second.key)
            assert int(datetime.fromisoformat(served["ts"]).timestamp() * 1000) == row.ts
            assert served["values"] == row.values
            assert [(s.replace("+00:00", "Z"), e) for s, e in second.intervals(meter)] == copied[meter]
        assert [m["id"] for m in get_json(f"{second.api}/api/v1/meters", key=second.key)] == list(METERS)

        # It keeps ingesting where the stream goes on.
        await publish(broker, range(120, 130), 0)
        newest = START_MS + (130 * PER_BATCH - 1) * STEP_MS
        await asyncio.to_thread(
            wait_until, lambda: second.latest_ms() == newest, 30, "the restored collector to ingest"
        )
    finally:
        first.process.stop()
        second.process.stop()


def test_restore_checks_the_file_first(tmp_path: Path) -> None:
    (tmp_path / "collector.yaml").write_text(f"ledger:\n  path: {tmp_path / 'ledger.db'}\n")
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    result = kilowatch(
        "collector", "restore", str(tmp_path / "junk.db"), "-c", str(tmp_path / "collector.yaml")
    )
    assert result.returncode == 1
    assert "not a readable SQLite ledger" in result.stderr
    assert not (tmp_path / "ledger.db").exists()

    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE meters (x)")
    db.close()
    with pytest.raises(BackupError, match="not a kilowatch ledger"):
        check(other)
    newer = tmp_path / "newer.db"
    Ledger(newer).close()
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(BackupError, match="newer than this release"):
        check(newer)


def test_rotation_keeps_the_newest_copies(tmp_path: Path) -> None:
    Ledger(tmp_path / "ledger.db").close()
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "notes.txt").write_text("kept")
    made = [
        rotate(tmp_path / "ledger.db", folder, keep=3, now=datetime(2026, 1, day, 2, 30, tzinfo=UTC))[0]
        for day in range(1, 6)
    ]
    assert sorted(p.name for p in folder.iterdir()) == [*(p.name for p in made[2:]), "notes.txt"]
    assert made[-1].name == "kilowatch-20260105T023000Z.db"
    assert made[-1].stat().st_mode & 0o777 == 0o640
    assert check(made[-1]) == SCHEMA_VERSION


def test_backup_takes_one_destination(tmp_path: Path) -> None:
    (tmp_path / "collector.yaml").write_text(f"ledger:\n  path: {tmp_path / 'ledger.db'}\n")
    config = ["-c", str(tmp_path / "collector.yaml")]
    both = kilowatch("collector", "backup", *config, "--out", str(tmp_path / "a.db"), "--dir", str(tmp_path))
    assert both.returncode == 2
    assert "--out/--dir" in both.stderr
    keep = kilowatch("collector", "backup", *config, "--out", str(tmp_path / "a.db"), "--keep", "3")
    assert keep.returncode == 2
    assert "--keep needs --dir" in keep.stderr
    missing = kilowatch("collector", "backup", *config, "--out", str(tmp_path / "a.db"))
    assert missing.returncode == 1
    assert "no ledger" in missing.stderr
