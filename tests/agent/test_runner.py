"""The agent's main loop against a real Mosquitto: one batch per bus and cycle, bad meters, a late broker."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from agent.config import AgentConfig, ClockMode, ClockSettings
from agent.runner import open_bus, run
from agent.transport import MemoryReader
from app.processes import Mosquitto, free_port, port_open, wait_until
from kilowatch.mqtt_contract import (
    Channel,
    ClockState,
    GatewayState,
    GatewayStatus,
    Quality,
    ReadingsBatch,
    topic,
)
from kilowatch.profiles import Table, load_builtin
from tests.agent_support import full_map, late_broker, payload
from tests.services import eventually

pytestmark = pytest.mark.services

SDM = load_builtin("eastron-sdm630")
READINGS = topic("s1", "g1", Channel.READINGS)
STATUS = topic("s1", "g1", Channel.STATUS)


def config(mqtt_port: int, spool: Path, **mqtt: float) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "site": "s1",
            "gateway": "g1",
            "poll_interval_s": 0.1,
            "mqtt": {"port": mqtt_port, **mqtt},
            "spool": {"path": spool, "commit_interval_s": 0.05},
            "clock": {"mode": "synced"},
            "buses": [
                {
                    "name": "bus-a",
                    "transport": "tcp",
                    "host": "192.0.2.1",  # never contacted: the tests read from memory
                    "meters": [
                        {"id": "m1", "profile": "eastron-sdm630", "unit": 1},
                        {"id": "m2", "profile": "sdm630", "unit": 2},
                    ],
                },
                {
                    "name": "bus-b",
                    "transport": "tcp",
                    "host": "192.0.2.2",
                    "meters": [{"id": "m3", "profile": "eastron-sdm630", "unit": 1}],
                },
            ],
        }
    )


def test_each_bus_reader_gets_its_meters_timeouts(tmp_path: Path) -> None:
    cfg = config(1883, tmp_path / "spool.db").model_copy(deep=True)
    raw = cfg.model_dump()
    raw["buses"][0]["timing"] = {"timeout_s": 0.4, "pause_after_connect_s": 0.1}
    raw["buses"][0]["meters"][1]["timing"] = {"timeout_s": 2.0}
    reader = open_bus(AgentConfig.model_validate(raw).buses[0])
    assert (reader.bus, str(reader.link), reader.unit_timeouts) == (
        "bus-a",
        "192.0.2.1:502",
        {1: 0.4, 2: 2.0},
    )
    assert (reader.timeout_s, reader.pause_after_connect_s) == (2.0, 0.1)


async def batches(client: aiomqtt.Client, count: int) -> list[ReadingsBatch]:
    out: list[ReadingsBatch] = []
    async with asyncio.timeout(20):
        async for message in client.messages:
            if str(message.topic) == READINGS:
                out.append(ReadingsBatch.model_validate_json(payload(message)))
                if len(out) == count:
                    return out
    raise AssertionError("unreachable")


def assert_replay_order(seqs: list[int], backlog_at_least: int) -> None:
    """The publisher's replay rule: the backlog (seq 0, 1, 2, ... up to the one committed when the
    session began) arrives oldest first, batches committed since in their own order, interleaved with
    it; none twice."""
    backlog: list[int] = []
    live: list[int] = []
    for seq in seqs:
        (backlog if seq == len(backlog) else live).append(seq)
    assert len(backlog) >= backlog_at_least, seqs
    assert live == sorted(set(live)), seqs
    assert all(seq > backlog[-1] for seq in live), seqs


async def test_one_batch_per_bus_cycle_and_a_silent_meter_does_not_stop_the_others(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    values_a, words_a = full_map(SDM, base=1)
    values_b, words_b = full_map(SDM, base=100)
    readers = {"bus-a": MemoryReader({1: words_a}), "bus-b": MemoryReader({1: words_b})}  # m2 never answers
    stop = asyncio.Event()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(f"{READINGS[: -len('readings')]}#", qos=1)
        agent = asyncio.create_task(
            run(
                config(mosquitto.port, tmp_path / "spool.db"),
                open_reader=lambda bus: readers[bus.name],
                stop=stop,
            )
        )
        received = await batches(sub, 6)
        stop.set()
        await asyncio.wait_for(agent, 20)
        async with asyncio.timeout(20):
            statuses = [GatewayStatus.model_validate_json(payload(m)) async for m in _status_messages(sub)]

    assert_replay_order([b.seq for b in received], backlog_at_least=1)
    by_bus: dict[tuple[str, ...], list[ReadingsBatch]] = {}
    for batch in received:  # each bus runs its own cycle and sends its own batch
        by_bus.setdefault(tuple(r.meter for r in batch.readings), []).append(batch)
    assert set(by_bus) == {("m1", "m2"), ("m3",)}
    for batch in by_bus[("m1", "m2")]:
        m1, m2 = batch.readings
        assert (m1.values, m1.quality) == (values_a, Quality.GOOD)
        assert (m2.values, m2.quality) == ({}, Quality.ERROR)
        assert m2.value_quality == {}  # not read at all
    for batch in by_bus[("m3",)]:
        assert (batch.readings[0].values, batch.readings[0].quality) == (values_b, Quality.GOOD)
    assert statuses[-1].state is GatewayState.OFFLINE
    assert all(s.spool is not None for s in statuses[:-1])
    assert len({b.spool_id for b in received}) == 1


async def _status_messages(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Message]:
    """Status messages until the offline one."""
    async for message in client.messages:
        if str(message.topic) == STATUS:
            yield message
            if GatewayStatus.model_validate_json(payload(message)).state is GatewayState.OFFLINE:
                return


def committed(spool: Path) -> int:
    """Batches committed to the agent's spool so far (read beside the agent, read-only)."""
    try:
        with sqlite3.connect(f"{spool.absolute().as_uri()}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT coalesce(max(seq) + 1, 0) FROM batches").fetchone()[0])
    except sqlite3.OperationalError:  # no file or no table yet: the agent is still creating its spool
        return 0


async def test_broker_down_at_start_then_queued_batches_arrive_in_order(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The agent polls with no broker; once one answers on its port, every batch arrives, none twice: the
    backlog oldest first, and batches polled since the connection in their own order, interleaved with it
    (the publisher's replay rule).

    The broker "appears" as a real TCP forwarder (socat) opened later on the agent's port towards the
    running Mosquitto: that lets the test subscribe before the agent can reach the broker, without a race.
    """
    _, words = full_map(SDM)
    reader = MemoryReader({1: words, 2: words})
    agent_port = free_port()
    stop = asyncio.Event()
    cfg = config(agent_port, tmp_path / "spool.db", reconnect_min_s=0.05, reconnect_max_s=0.2)
    agent = asyncio.create_task(run(cfg, open_reader=lambda bus: reader, stop=stop))

    await eventually(lambda: committed(tmp_path / "spool.db") >= 8, "four poll cycles without a broker", 20)
    forwarder = late_broker(agent_port, mosquitto, tmp_path / "socat.log")
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
            await sub.subscribe(READINGS, qos=1)
            backlog = committed(tmp_path / "spool.db")  # at least: more may commit before the connection
            forwarder.start()
            await asyncio.to_thread(
                wait_until, lambda: port_open("127.0.0.1", agent_port), 10, "socat to listen"
            )
            seqs: list[int] = []
            meters: set[tuple[str, ...]] = set()
            async with asyncio.timeout(20):
                async for message in sub.messages:  # until the backlog came
                    batch = ReadingsBatch.model_validate_json(payload(message))
                    seqs.append(batch.seq)
                    meters.add(tuple(r.meter for r in batch.readings))
                    if set(range(backlog)) <= set(seqs):
                        break
        stop.set()
        await asyncio.wait_for(agent, 20)
    finally:
        forwarder.stop()
    assert_replay_order(seqs, backlog_at_least=backlog)
    assert meters == {("m1", "m2"), ("m3",)}


class SwallowingReader(MemoryReader):
    """Slow answers, and the first cancel swallowed: what Python 3.11's ``asyncio.wait_for`` under
    pymodbus does when the cancel arrives together with the answer."""

    swallowed = 0

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
        return await super().read(table, address, count, unit, timeout_s=timeout_s)


async def test_a_cancel_swallowed_under_a_read_does_not_hang_the_stop(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    _, words = full_map(SDM)
    reader = SwallowingReader({1: words, 2: words})
    stop = asyncio.Event()
    agent = asyncio.create_task(
        run(config(mosquitto.port, tmp_path / "spool.db"), open_reader=lambda bus: reader, stop=stop)
    )
    await eventually(lambda: len(reader.requests) > 6, "the buses to be polled")  # reading all the time
    stop.set()
    await asyncio.wait_for(agent, 10)
    assert reader.swallowed == 1


async def test_the_spool_outlives_the_agent_and_its_seq_carries_on(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A second run on the same spool file goes on numbering where the first stopped."""
    _, words = full_map(SDM)
    reader = MemoryReader({1: words, 2: words})
    cfg = config(mosquitto.port, tmp_path / "spool.db")
    seqs = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(READINGS, qos=1)
        for _ in range(2):
            stop = asyncio.Event()
            agent = asyncio.create_task(run(cfg, open_reader=lambda bus: reader, stop=stop))
            received = await batches(sub, 2)
            stop.set()
            await asyncio.wait_for(agent, 20)
            seqs.append([b.seq for b in received])
    assert seqs[0][:2] == [0, 1]
    assert seqs[1][0] > seqs[0][-1]


async def test_readings_stamped_before_clock_sync_are_redated_in_the_spool(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """No broker and no synchronised clock: batches wait in the spool marked unsynced. The clock syncs
    (the flag file timesyncd creates appears): the spooled readings are re-dated from the boot clock and
    go out `corrected`, the status carries the anchor, and later readings are `synced`."""
    _, words = full_map(SDM)
    reader = MemoryReader({1: words, 2: words})
    agent_port = free_port()
    flag = tmp_path / "synchronized"
    cfg = config(agent_port, tmp_path / "spool.db", reconnect_min_s=0.05, reconnect_max_s=0.2)
    cfg = cfg.model_copy(update={"clock": ClockSettings(mode=ClockMode.FLAG_FILE, flag_file=flag)})
    stop = asyncio.Event()
    agent = asyncio.create_task(run(cfg, open_reader=lambda bus: reader, stop=stop))
    await eventually(lambda: sum(1 for r in reader.requests if r[1] == 0) >= 9, "three cycles unsynced", 20)
    flag.touch()
    await eventually(lambda: sum(1 for r in reader.requests if r[1] == 0) >= 18, "three cycles synced", 20)
    forwarder = late_broker(agent_port, mosquitto, tmp_path / "socat.log")
    statuses: list[GatewayStatus] = []
    received: list[ReadingsBatch] = []
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
            await sub.subscribe(f"{READINGS[: -len('readings')]}#", qos=1)
            backlog = committed(tmp_path / "spool.db")
            forwarder.start()
            async with asyncio.timeout(30):
                async for message in sub.messages:  # until the backlog and an anchored status came
                    if str(message.topic) == STATUS:
                        statuses.append(GatewayStatus.model_validate_json(payload(message)))
                    elif str(message.topic) == READINGS:
                        received.append(ReadingsBatch.model_validate_json(payload(message)))
                    if set(range(backlog)) <= {b.seq for b in received} and any(
                        s.clock_anchor for s in statuses
                    ):
                        break
        stop.set()
        await asyncio.wait_for(agent, 20)
    finally:
        forwarder.stop()
    anchor = next(s.clock_anchor for s in statuses if s.clock_anchor is not None)
    assert anchor.boot_id == received[0].boot_id
    readings = [r for b in received for r in b.readings]
    assert {r.clock for r in readings} == {ClockState.CORRECTED, ClockState.SYNCED}  # none left unsynced
    corrected = [r for r in readings if r.clock is ClockState.CORRECTED]
    assert len(corrected) >= 6  # the three cycles polled before the sync (two buses, three meters)
    assert all(r.mono_ms is not None and r.ts == r.mono_ms + anchor.offset_ms for r in corrected)
