"""A spool file that SQLite would open without complaint but that lost what it held (issue 16, finding 8):
cut to 0 bytes, or its write-ahead log garbled after a SIGKILL. Each is moved aside with a
``spool_corrupt`` event saying what was recovered, never a silent fresh start."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import SpoolSettings
from agent.spool import Spool
from kilowatch.mqtt_contract import ClockState, GatewayEventKind, Quality, Reading

WRITER = """
import asyncio, sys
from pathlib import Path
from agent.config import SpoolSettings
from agent.spool import Spool
from kilowatch.mqtt_contract import ClockState, Quality, Reading

async def main() -> None:
    spool = Spool(SpoolSettings(path=Path(sys.argv[1])), boot_id=None)
    n = 0
    while True:
        spool.append([Reading(meter="m1", profile="p", ts=1_700_000_000_000 + n, values={"active_power_w": 1.0},
                              quality=Quality.GOOD, clock=ClockState.SYNCED)])
        n += 1
        await spool.flush()
        print(spool.last_seq, flush=True)

asyncio.run(main())
"""


def reading(n: int) -> Reading:
    return Reading(
        meter="m1",
        profile="eastron-sdm630",
        ts=1_700_000_000_000 + n,
        values={"active_power_w": float(n)},
        quality=Quality.GOOD,
        clock=ClockState.SYNCED,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spool.db"


def spool_at(path: Path) -> Spool:
    return Spool(SpoolSettings(path=path), boot_id=None)


async def pending(spool: Spool) -> list[list[Reading]]:
    batches, _ = await spool.read(-1, limit=1_000_000)
    return [b.readings for b in batches]


async def written(path: Path, batches: int) -> None:
    spool = spool_at(path)
    for n in range(batches):
        spool.append([reading(n)])
    await spool.flush()
    spool.close()


async def corrupt_event(spool: Spool) -> str:
    [event] = [e for e in await spool.events() if e.kind is GatewayEventKind.SPOOL_CORRUPT]
    return event.detail


async def test_a_zero_length_spool_is_corrupt_not_a_fresh_start(path: Path) -> None:
    await written(path, 14)
    os.truncate(path, 0)  # what a power cut can leave of it
    spool = spool_at(path)
    await spool.flush()
    detail = await corrupt_event(spool)
    assert "the file is empty (0 bytes)" in detail
    assert "recovered 0 batches" in detail
    [aside] = path.parent.glob("spool.db.corrupt-*")
    assert aside.stat().st_size == 0
    assert spool.append([reading(99)]) == 0  # the fresh spool works
    spool.close()


async def test_a_new_spool_is_no_corrupt_one(path: Path) -> None:
    spool = spool_at(path)
    await spool.flush()
    assert await spool.events() == []
    spool.close()
    again = spool_at(path)
    assert await again.events() == []
    again.close()
    assert list(path.parent.glob("*.corrupt-*")) == []


def garble_wal(path: Path, size: int | None = None) -> None:
    wal = Path(f"{path}-wal")
    wal.write_bytes(os.urandom(wal.stat().st_size if size is None else size))


def killed_writer(path: Path) -> tuple[int, int]:
    """A spool written by a child process, SIGKILLed after 100 commits, its WAL then garbled: (batches
    committed, batches in the main file that SQLite can still read)."""
    path.parent.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    committed = [int(child.stdout.readline()) for _ in range(100)]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert Path(f"{path}-wal").stat().st_size > 0  # the committed batches are (partly) only in the WAL
    garble_wal(path)
    in_main = 0  # what was checkpointed into the main file before the kill (often nothing yet)
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    with contextlib.closing(db), contextlib.suppress(sqlite3.OperationalError):
        in_main = db.execute("SELECT count(*) FROM batches").fetchone()[0]
    return committed[-1] + 1, in_main


async def test_a_garbled_wal_is_corrupt_and_what_the_file_holds_is_carried_over(path: Path) -> None:
    await written(path, 14)  # a clean close: all 14 are in the main file, no WAL left
    garble_wal(path, 8192)
    spool = spool_at(path)
    await spool.flush()
    detail = await corrupt_event(spool)
    assert "spool.db-wal (8192 bytes) has no valid header" in detail
    assert "recovered 14 batches (14 readings)" in detail
    assert await pending(spool) == [[reading(n)] for n in range(14)]
    assert spool.last_seq == 13
    spool.close()


async def test_garbage_wal_after_sigkill_is_reported_with_what_was_recovered(path: Path) -> None:
    committed, in_main = killed_writer(path)
    spool = spool_at(path)
    await spool.flush()
    detail = await corrupt_event(spool)
    assert "has no valid header" in detail
    assert f"recovered {in_main} batches" in detail
    assert len(await pending(spool)) == in_main
    spool.close()
    print(f"{committed} committed before SIGKILL; {in_main} recovered from the main file")
