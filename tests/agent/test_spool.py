"""The on-disk spool on real SQLite files: seq across restarts, SIGKILL of a real writer, bounds and their
events, a corrupt file moved aside, a really full database, re-dating; and, with a real Mosquitto, the
publisher draining it across a broker outage and across SIGKILLs of a child agent."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest

from agent.config import MqttSettings, SpoolSettings
from agent.publisher import Publisher
from agent.spool import Spool
from app.processes import Mosquitto, free_port, port_open, wait_until
from kilowatch.mqtt_contract import (
    Channel,
    ClockState,
    GatewayEvent,
    GatewayEventKind,
    Quality,
    Reading,
    ReadingsBatch,
    topic,
)
from tests.agent_support import late_broker, payload
from tests.services import eventually

READINGS = topic("s1", "g1", Channel.READINGS)
EVENTS = topic("s1", "g1", Channel.EVENTS)
BOOT = "0f3a9c1e-5b7d-4a64-9e2b-1c2d3e4f5a6b"


def reading(n: int, clock: ClockState = ClockState.SYNCED, mono_ms: int | None = None) -> Reading:
    return Reading(
        meter="m1",
        profile="eastron-sdm630",
        ts=1_700_000_000_000 + n,
        values={"active_power_w": float(n)},
        quality=Quality.GOOD,
        clock=clock,
        mono_ms=mono_ms,
    )


def settings(path: Path, **overrides: float) -> SpoolSettings:
    return SpoolSettings.model_validate({"path": path, **overrides})


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spool.db"


def opened(path: Path, **overrides: float) -> Spool:
    return Spool(settings(path, **overrides), boot_id=BOOT)


async def all_seqs(spool: Spool) -> list[int]:
    batches, _ = await spool.read(-1, limit=1_000_000)
    return [b.seq for b in batches]


async def test_batches_are_readable_once_committed_and_seq_carries_on_after_a_restart(
    spool_path: Path,
) -> None:
    spool = opened(spool_path)
    assert [spool.append([reading(n)]) for n in range(3)] == [0, 1, 2]
    assert (await all_seqs(spool), spool.last_seq, spool.status().pending_batches) == ([], -1, 3)
    assert await spool.flush()
    assert await all_seqs(spool) == [0, 1, 2]
    spool.ack(0)
    await spool.flush()
    spool_id = spool.spool_id
    spool.close()

    again = opened(spool_path)
    assert (again.spool_id, await all_seqs(again), again.append([reading(9)])) == (spool_id, [1, 2], 3)
    await again.flush()
    [*_, last], _ = await again.read(2)
    assert (last.seq, last.readings, last.boot_id) == (3, [reading(9)], BOOT)
    status = again.status()
    assert (status.pending_batches, status.pending_readings, status.oldest_ts) == (3, 3, reading(1).ts)
    again.close()


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
        for _ in range(5):
            spool.append([Reading(meter="m1", profile="p", ts=1_700_000_000_000 + n, values={"active_power_w": float(n)},
                                  quality=Quality.GOOD, clock=ClockState.SYNCED)] * 20)
            n += 1
        await spool.flush()
        print(spool.last_seq, flush=True)

asyncio.run(main())
"""


def test_sigkill_mid_write_leaves_a_sound_file_with_every_committed_batch(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(spool_path)], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert child.stdout is not None
    committed = [int(child.stdout.readline()) for _ in range(200)]
    child.send_signal(signal.SIGKILL)
    child.wait()

    with sqlite3.connect(spool_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {seq for (seq,) in db.execute("SELECT seq FROM batches")}
    assert set(range(committed[-1] + 1)) <= stored
    assert stored == set(range(max(stored) + 1))
    print(f"SIGKILL after {committed[-1] + 1} committed batches; {len(stored)} found on reopening")


async def test_over_the_size_bound_the_oldest_are_evicted_counted_and_reported(spool_path: Path) -> None:
    spool = opened(spool_path, max_bytes=64 * 1024)
    for n in range(200):
        spool.append([reading(n * 10 + i) for i in range(10)])
    await spool.flush()
    seqs = await all_seqs(spool)
    assert seqs[0] > 0
    assert seqs == list(range(seqs[0], 200))
    [event] = await spool.events()
    evicted = seqs[0] * 10
    assert (event.kind, event.readings, event.oldest_ts, event.newest_ts) == (
        GatewayEventKind.SPOOL_EVICTED,
        evicted,
        reading(0).ts,
        reading(evicted - 1).ts,
    )
    assert f"seq 0-{seqs[0] - 1}" in event.detail
    assert spool.status().evicted_readings == evicted
    spool.close()
    assert opened(spool_path).status().evicted_readings == evicted  # the total is kept in the file


async def test_batches_older_than_the_age_bound_are_evicted(spool_path: Path) -> None:
    spool = opened(spool_path, max_age_s=0.2)
    spool.append([reading(1)])
    await spool.flush()
    await asyncio.sleep(0.3)
    spool.append([reading(2)])
    await spool.flush()
    assert await all_seqs(spool) == [1]
    [event] = await spool.events()
    assert (event.kind, event.readings, "older than 0.2 s" in event.detail) == (
        GatewayEventKind.SPOOL_EVICTED,
        1,
        True,
    )


def write_garbage(path: Path) -> bytes:
    garbage = bytes(range(256)) * 64
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    return garbage


async def test_a_corrupt_file_is_moved_aside_never_deleted_and_a_fresh_spool_starts(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = write_garbage(spool_path)
    spool = opened(spool_path)
    [aside] = spool_path.parent.glob("spool.db.corrupt-*")
    assert aside.read_bytes() == garbage
    assert str(spool_path) in caplog.text
    assert str(aside) in caplog.text
    assert any(r.levelname == "ERROR" for r in caplog.records)
    assert spool.append([reading(1)]) == 0
    await spool.flush()
    [event] = await spool.events()
    assert (event.kind, str(aside) in event.detail) == (GatewayEventKind.SPOOL_CORRUPT, True)


def test_a_database_of_another_schema_is_moved_aside_too(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    with sqlite3.connect(spool_path) as db:
        db.execute("CREATE TABLE other (x)")
    opened(spool_path).close()
    assert len(list(spool_path.parent.glob("spool.db.corrupt-*"))) == 1


async def test_a_full_disk_refuses_readings_counts_them_and_recovers(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = opened(spool_path)
    await spool.flush()
    pages = spool.db.execute("PRAGMA page_count").fetchone()[0]
    spool.db.execute(f"PRAGMA max_page_count = {pages + 2}")  # a real SQLITE_FULL, a few pages on
    refused, stored = 0, 0
    while spool.status().accepting:
        seq = spool.append([reading(n) for n in range(50)])
        await spool.flush()
        stored += spool.status().accepting
        refused += seq is not None and not spool.status().accepting
    assert spool.append([reading(1)]) is None  # refused at once now
    assert spool.lost_readings == 50 * refused + 1
    assert await all_seqs(spool) == list(range(stored))
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] != []
    await spool.flush()  # still full: still refusing, logged once
    assert not spool.status().accepting
    assert sum(r.levelname == "ERROR" for r in caplog.records) == 1

    spool.db.execute("PRAGMA max_page_count = 1073741823")
    await spool.flush()
    assert spool.status().accepting
    assert spool.append([reading(2)]) == stored  # seq goes on with no gap
    await spool.flush()
    full, accepting = await spool.events()
    assert (full.kind, full.readings, accepting.kind) == (
        GatewayEventKind.SPOOL_FULL,
        spool.lost_readings,
        GatewayEventKind.SPOOL_ACCEPTING,
    )


async def test_reanchor_redates_unsynced_readings_of_that_boot_only(spool_path: Path) -> None:
    spool = opened(spool_path)
    unsynced = reading(1, ClockState.UNSYNCED, mono_ms=5_000)
    spool.append([unsynced, reading(2)])
    await spool.flush()
    spool.append(
        [reading(3, ClockState.UNSYNCED, mono_ms=6_000), reading(4, ClockState.UNSYNCED)]
    )  # buffered
    assert spool.reanchor("aaaaaaaa-other-boot", 1_000) == 0
    assert spool.reanchor(BOOT, 1_700_000_000_000) == 2
    await spool.flush()
    first, second = (b.readings for b in (await spool.read(-1))[0])
    assert first == [
        unsynced.model_copy(update={"ts": 1_700_000_005_000, "clock": ClockState.CORRECTED}),
        reading(2),
    ]
    assert [(r.ts, r.clock) for r in second] == [
        (1_700_000_006_000, ClockState.CORRECTED),
        (reading(4).ts, ClockState.UNSYNCED),  # no mono_ms: nothing to re-date from
    ]
    assert spool.reanchor(BOOT, 1_700_000_000_000) == 0
    # A cycle that began before the sync appends its unsynced readings after it: re-dated on the way in.
    spool.append([reading(5, ClockState.UNSYNCED, mono_ms=7_000)])
    await spool.flush()
    *_, late = (await spool.read(-1))[0]
    assert [(r.ts, r.clock) for r in late.readings] == [(1_700_000_007_000, ClockState.CORRECTED)]


# -- with a broker ------------------------------------------------------------------------------------------


async def collect(
    client: aiomqtt.Client, done: Callable[[list[aiomqtt.Message]], bool], within: float = 30
) -> list[aiomqtt.Message]:
    """Messages until `done(messages)` is true."""
    messages: list[aiomqtt.Message] = []
    async with asyncio.timeout(within):
        async for message in client.messages:
            messages.append(message)
            if done(messages):
                return messages
    raise AssertionError("unreachable")


def batches_of(messages: list[aiomqtt.Message]) -> list[ReadingsBatch]:
    return [ReadingsBatch.model_validate_json(payload(m)) for m in messages if str(m.topic) == READINGS]


@pytest.mark.services
async def test_broker_down_batches_pile_up_then_arrive_in_order(
    mosquitto: Mosquitto, spool_path: Path, tmp_path: Path
) -> None:
    """The broker "appears" as a socat forwarder opened later on the publisher's port."""
    port = free_port()
    mqtt = MqttSettings(port=port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    spool = opened(spool_path, commit_interval_s=0.05)
    forwarder = late_broker(port, mosquitto, tmp_path / "socat.log")
    try:
        async with (
            aiomqtt.Client(mosquitto.host, mosquitto.port) as sub,
            Publisher(mqtt, site="s1", gateway="g1", spool=spool, flush_timeout_s=5) as publisher,
        ):
            await sub.subscribe(READINGS, qos=1)
            for n in range(40):
                publisher.submit([reading(n)])
            await eventually(lambda: spool.last_seq == 39, "40 committed batches")
            assert (publisher.connected, publisher.pending) == (False, 40)
            forwarder.start()
            await asyncio.to_thread(wait_until, lambda: port_open("127.0.0.1", port), 10, "socat to listen")
            received = batches_of(await collect(sub, lambda m: len(m) == 40))
            await eventually(lambda: spool.status().pending_batches == 0, "the acknowledged batches deleted")
    finally:
        forwarder.stop()
        spool.close()
    assert [b.seq for b in received] == list(range(40))
    assert {b.spool_id for b in received} == {spool.spool_id}
    assert [b.readings for b in received] == [[reading(n)] for n in range(40)]


AGENT = """
import asyncio, sys
from pathlib import Path
from agent.config import MqttSettings, SpoolSettings
from agent.publisher import Publisher
from agent.spool import Spool
from kilowatch.mqtt_contract import ClockState, Quality, Reading

async def main(path: str, port: int, count: int, commit_interval_s: float) -> None:
    spool = Spool(SpoolSettings(path=Path(path), commit_interval_s=commit_interval_s), boot_id=None)
    mqtt = MqttSettings(port=port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    async with Publisher(mqtt, site="s1", gateway="g1", spool=spool) as publisher:
        n = 0
        while count < 0 or n < count:
            publisher.submit([Reading(meter="m1", profile="p", ts=1_700_000_000_000 + n, values={"active_power_w": float(n)},
                                      quality=Quality.GOOD, clock=ClockState.SYNCED)])
            n += 1
            await asyncio.sleep(0.002)
        await publisher.flush()
        print("committed", spool.last_seq, flush=True)
        await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
"""


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
        child.wait()


def start_agent(
    started: list[subprocess.Popen[bytes]], spool_path: Path, port: int, count: int, commit_interval_s: float
) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(spool_path), str(port), str(count), str(commit_interval_s)],
        stdout=subprocess.PIPE,
    )
    started.append(child)
    return child


@pytest.mark.services
async def test_sigkill_while_publishing_then_restart_every_batch_arrives(
    mosquitto: Mosquitto, spool_path: Path, agents: list[subprocess.Popen[bytes]]
) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(READINGS, qos=1)
        first = start_agent(agents, spool_path, mosquitto.port, -1, 0.02)
        before = batches_of(await collect(sub, lambda m: len(m) >= 100))
        first.send_signal(signal.SIGKILL)
        first.wait()
        with sqlite3.connect(spool_path) as db:
            committed = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
        start_agent(agents, spool_path, mosquitto.port, 0, 0.02)  # appends nothing: drains the spool
        seen = {b.seq for b in before}
        after = batches_of(
            await collect(sub, lambda m: seen | {b.seq for b in batches_of(m)} >= set(range(committed)))
        )
    seqs = [b.seq for b in before + after]
    assert set(range(committed)) <= set(seqs)  # every committed batch arrived
    assert set(seqs) == set(range(max(seqs) + 1))  # none missing
    assert len({b.spool_id for b in before + after}) == 1
    print(f"{committed} batches committed before SIGKILL; {len(seqs) - len(set(seqs))} arrived twice")


@pytest.mark.services
async def test_unacknowledged_batches_are_resent_after_a_restart_with_the_same_spool_id_and_seq(
    mosquitto: Mosquitto, spool_path: Path, agents: list[subprocess.Popen[bytes]]
) -> None:
    """The first agent never commits the deletions of what the broker acknowledged (its commit interval
    is a minute) and is killed: the second sends the same batches again, under the same names."""
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(READINGS, qos=1)
        first = start_agent(agents, spool_path, mosquitto.port, 10, 60)
        sent = batches_of(await collect(sub, lambda m: len(m) == 10))
        first.send_signal(signal.SIGKILL)
        first.wait()
        start_agent(agents, spool_path, mosquitto.port, 0, 60)
        resent = batches_of(await collect(sub, lambda m: len(m) == 10))
    assert [b.seq for b in sent] == list(range(10))
    assert [(b.spool_id, b.seq, b.readings) for b in resent] == [
        (b.spool_id, b.seq, b.readings) for b in sent
    ]


@pytest.mark.services
async def test_spool_events_are_published_on_the_events_topic(mosquitto: Mosquitto, spool_path: Path) -> None:
    write_garbage(spool_path)
    spool = opened(spool_path, commit_interval_s=0.05)
    mqtt = MqttSettings(port=mosquitto.port)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(EVENTS, qos=1)
        async with Publisher(mqtt, site="s1", gateway="g1", spool=spool):
            [message] = await collect(sub, lambda m: len(m) == 1)
            await eventually(lambda: not spool.has_events, "the acknowledged event deleted")
    spool.close()
    event = GatewayEvent.model_validate_json(payload(message))
    assert (event.site, event.gateway, event.kind) == ("s1", "g1", GatewayEventKind.SPOOL_CORRUPT)


@pytest.mark.services
async def test_a_batch_that_no_longer_fits_the_contract_is_set_aside_not_blocking_the_rest(
    mosquitto: Mosquitto, spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored batch the wire contract refuses (here a boot id that is not one, as a contract change
    could make of old rows) is kept aside with the reason; the batches after it go out."""
    bad = Spool(settings(spool_path), boot_id="not a boot id")
    bad.append([reading(1)])
    await bad.flush()
    bad.close()
    spool = opened(spool_path, commit_interval_s=0.05)
    spool.append([reading(2)])
    spool.append([reading(3)])
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(READINGS, qos=1)
        async with Publisher(MqttSettings(port=mosquitto.port), site="s1", gateway="g1", spool=spool):
            sent = batches_of(await collect(sub, lambda m: len(m) == 2))
            await eventually(lambda: spool.status().pending_batches == 0, "the queue emptied")
    spool.close()
    assert [b.seq for b in sent] == [1, 2]
    assert "batch 0 does not fit the MQTT contract" in caplog.text
    with sqlite3.connect(spool_path) as db:
        [(seq, reason)] = db.execute("SELECT seq, reason FROM unpublishable").fetchall()
    assert seq == 0
    assert "boot_id" in reason


def test_openers_racing_on_a_new_file_never_take_it_for_corrupt(spool_path: Path) -> None:
    """Creating the schema holds a write lock: a second opener waits for it instead of finding half the
    tables (calling the file corrupt and moving it aside) or failing on the lock."""
    failures: list[BaseException] = []
    for attempt in range(5):
        path = spool_path.with_name(f"race-{attempt}.db")
        start = threading.Barrier(4)

        def open_close(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                Spool(settings(path), boot_id=BOOT).close()
            except Exception as exc:  # collected: an exception in a thread would not fail the test
                failures.append(exc)

        openers = [threading.Thread(target=open_close) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    assert failures == []
    assert list(spool_path.parent.glob("*.corrupt-*")) == []
