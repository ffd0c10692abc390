"""The collector as a child process against a real Mosquitto: killed (SIGKILL), stopped (SIGTERM) or
with the broker restarted while an agent-like publisher sends, it ends up with every reading exactly once;
and what it counts as stored is what its commits added to the ledger, redeliveries included.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from app.processes import Mosquitto, Process, free_port, port_open, wait_until, write_collector_config
from collector.store import LedgerReader, Location
from kilowatch.mqtt_contract import Channel, topic
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt
from tests.services import eventually

pytestmark = pytest.mark.services

METERS = 10
SPOOL = "c0ffee00"


class Stack:
    """A persistent Mosquitto (restartable on its port) and a collector process (restartable)."""

    def __init__(self, tmp_path: Path, ledger: Location) -> None:
        self.tmp = tmp_path
        work = tmp_path / "mosquitto"
        # As root Mosquitto drops privileges and could not write its database; queue without limit; the
        # in-flight window of deploy/mosquitto.conf.
        conf = (
            f"persistence true\npersistence_location {work}/\nuser root\nmax_queued_messages 0\n"
            "max_inflight_messages 200\n"
        )
        self.broker = Mosquitto.start(work, extra_conf=conf)
        self.api = f"http://127.0.0.1:{free_port()}"
        self.ledger = ledger
        self.ledger_setting = ledger if isinstance(ledger, Path) else ledger.url
        self.config = write_collector_config(
            tmp_path / "collector.yaml", self.broker, ledger=self.ledger_setting,
            api_port=int(self.api.rsplit(":", 1)[1]), tsdb_url=None, client_id="session-test",
            retention_days=36_600,  # the readings are stamped in 2024
        )  # fmt: skip
        self.collector: Process | None = None

    def start_collector(self, config: Path | None = None, *, wait: bool = True) -> None:
        """Start the collector (with `config`: another collector.yaml, e.g. through a relay) and, with
        `wait`, wait until it has subscribed."""
        args = [sys.executable, "-m", "app", "collector", "run", "--config", str(config or self.config)]
        self.collector = Process("collector", args, self.tmp / "collector.log").start()
        if wait:
            wait_until(lambda: self.metrics()["kilowatch_collector_mqtt_connected"] == 1, 30, "the collector")

    def signal_collector(self, sig: signal.Signals) -> int:
        assert self.collector is not None
        assert self.collector.proc is not None
        self.collector.proc.send_signal(sig)
        return self.collector.proc.wait(timeout=20)

    def restart_broker(self) -> None:
        """Stop Mosquitto (it saves its database) and start it again on the same port."""
        self.broker.stop()
        old = self.broker.process
        self.broker = Mosquitto(
            self.broker.host, self.broker.port, Process(old.name, old.args, old.log_path).start()
        )
        wait_until(lambda: port_open(self.broker.host, self.broker.port), 10, "mosquitto to come back")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=2) as response:  # noqa: S310 - loopback
            lines = response.read().decode().splitlines()
        return {
            name: float(number)
            for name, number in (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))
        }

    def answers(self) -> bool:
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def stored(self) -> list[tuple[str, int]]:
        with LedgerReader(self.ledger) as reader:
            return [(r.meter_id, r.ts) for m in range(METERS) for r in reader.readings(f"m{m}", 0, 2**62)]

    def close(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        self.broker.stop()


@pytest.fixture
def stack(tmp_path: Path, ledger_at: LedgerAt) -> Iterator[Stack]:
    running = Stack(tmp_path, ledger_at("ledger"))
    yield running
    running.close()


async def publish(broker: Mosquitto, seqs: range, pause_s: float = 0.0) -> None:
    """Like an agent: QoS 1, one batch of every meter per seq, each publish waiting for the broker."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="agent-like") as client:
        for seq in seqs:
            message = batch(
                *(reading(at(0) + seq * 1000, meter=f"m{m}", imp=float(seq)) for m in range(METERS)), seq=seq
            ).model_copy(update={"spool_id": SPOOL})
            await client.publish(topic("site1", "gw1", Channel.READINGS), message.model_dump_json(), qos=1)
            await asyncio.sleep(pause_s)


def expected(seqs: range) -> list[tuple[str, int]]:
    return [(f"m{m}", at(0) + seq * 1000) for m in range(METERS) for seq in seqs]


async def test_killed_stopped_or_with_the_broker_restarted_the_collector_loses_nothing(stack: Stack) -> None:
    await asyncio.to_thread(stack.start_collector)
    sending = asyncio.create_task(publish(stack.broker, range(400), pause_s=0.01))

    def accepted(n: int) -> bool:
        return stack.metrics().get("kilowatch_collector_readings_accepted_total", 0) >= n

    await eventually(lambda: accepted(300), "300 readings before the kill", 60)
    assert await asyncio.to_thread(stack.signal_collector, signal.SIGKILL) == -signal.SIGKILL
    await asyncio.sleep(0.3)  # the publisher goes on: the broker queues for the session
    await asyncio.to_thread(stack.start_collector)
    await eventually(lambda: accepted(100), "100 readings after the restart", 60)
    assert await asyncio.to_thread(stack.signal_collector, signal.SIGTERM) == 0
    await asyncio.sleep(0.3)
    await asyncio.to_thread(stack.start_collector)
    await sending

    # The broker restarts while the collector is away: its persistent session and queue survive.
    assert await asyncio.to_thread(stack.signal_collector, signal.SIGKILL) == -signal.SIGKILL
    await publish(stack.broker, range(400, 450))
    await asyncio.to_thread(stack.restart_broker)
    await asyncio.to_thread(stack.start_collector)

    want = sorted(expected(range(450)))
    await eventually(lambda: len(stack.stored()) >= len(want), "every reading in the ledger", 60)
    await asyncio.sleep(0.5)  # anything redelivered late would show now
    assert sorted(stack.stored()) == want
    with LedgerReader(stack.ledger) as reader:
        assert reader.missing_batches() == 0
    log = stack.collector.log() if stack.collector else ""
    assert "Traceback" not in log


class Relay:
    """A TCP relay in front of the broker. A connection waits until the relay is `open`; once `swallowing`,
    it no longer passes the client's bytes on: the collector commits what it receives and acknowledges it,
    and the broker never hears of it, so it redelivers all of it to the next connection of the session."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.open = asyncio.Event()
        self.open.set()
        self.swallowing = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        await self.open.wait()
        broker_r, broker_w = await asyncio.open_connection(self.broker.host, self.broker.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_client: bool) -> None:
            while data := await src.read(65536):
                if not (from_client and self.swallowing):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(client_r, broker_w, True), pipe(broker_r, client_w, False), return_exceptions=True
        )


def relayed(stack: Stack, relay: Relay, tmp_path: Path) -> Path:
    """A collector.yaml like the stack's, its broker reached through `relay`."""
    return write_collector_config(
        tmp_path / "relayed.yaml", Mosquitto(stack.broker.host, relay.port, stack.broker.process),
        ledger=stack.ledger_setting, api_port=int(stack.api.rsplit(":", 1)[1]), tsdb_url=None,
        client_id="session-test", retention_days=36_600,
    )  # fmt: skip


async def test_the_stored_readings_metric_counts_what_the_commits_added_across_a_redelivery(
    stack: Stack, tmp_path: Path
) -> None:
    """A collector commits messages whose acknowledgements never reach the broker and is killed; the next
    one gets them again (duplicates) with the rest. Each counts as stored exactly the rows it added."""
    async with Relay(stack.broker) as relay:
        await asyncio.to_thread(stack.start_collector, relayed(stack, relay, tmp_path))
        relay.swallowing = True
        await publish(stack.broker, range(40))

        def stored_by_first() -> float:  # the relayed collector's API is the stack's
            return stack.metrics().get("kilowatch_collector_readings_stored_total", 0)

        samples: list[tuple[float, int]] = []

        def settled() -> bool:
            """The metric and the ledger agree, as they did ten polls ago (nothing more is coming)."""
            samples.append((stored_by_first(), len(stack.stored())))
            return len(samples) > 10 and samples[-1] == samples[-11] and samples[-1][1] > 0

        await eventually(settled, "the first collector to store what the broker sent", 60)
        stored, rows_before = samples[-1]
        assert stored == rows_before
        assert await asyncio.to_thread(stack.signal_collector, signal.SIGKILL) == -signal.SIGKILL

    await publish(stack.broker, range(40, 60))  # queued for the session meanwhile
    await asyncio.to_thread(stack.start_collector)
    want = sorted(expected(range(60)))
    await eventually(lambda: len(stack.stored()) >= len(want), "every reading in the ledger", 60)
    await asyncio.sleep(0.5)  # anything redelivered late would show now
    assert sorted(stack.stored()) == want
    metrics = stack.metrics()
    assert metrics["kilowatch_collector_readings_duplicate_total"] > 0  # the redelivery happened
    assert metrics["kilowatch_collector_readings_stored_total"] == len(want) - rows_before


async def test_the_session_set_up_waits_behind_a_queue_the_collector_cannot_take_yet(
    stack: Stack, tmp_path: Path
) -> None:
    """More messages queued for the session than the collector holds at once, and a ledger it cannot write
    for longer than the client's 10 s timeout: the SUBACK comes behind messages the collector does not read
    yet. It waits for it instead of giving up and reconnecting, and stores everything once it can."""
    await asyncio.to_thread(stack.start_collector)
    assert await asyncio.to_thread(stack.signal_collector, signal.SIGTERM) == 0
    await publish(stack.broker, range(300))  # more than its receive maximum (200)
    async with Relay(stack.broker) as relay:
        relay.open.clear()  # its connection waits while the ledger is opened, then taken by another writer
        await asyncio.to_thread(stack.start_collector, relayed(stack, relay, tmp_path), wait=False)
        await eventually(stack.answers, "the collector's API (its ledger open)", 30)
        with writes_blocked(stack.ledger):
            relay.open.set()
            await asyncio.sleep(12)  # longer than the client's default timeout (10 s)
        want = sorted(expected(range(300)))
        await eventually(lambda: len(stack.stored()) >= len(want), "every reading in the ledger", 90)
    assert sorted(stack.stored()) == want
    log = stack.collector.log() if stack.collector else ""
    assert "unavailable" not in log
    assert "task mqtt-ingest failed" not in log  # (the retention task may fail on the lock and start again)


@contextlib.contextmanager
def writes_blocked(ledger: Location) -> Iterator[None]:
    """Another writer holds the ledger: the collector's ingest cannot commit until it lets go."""
    if isinstance(ledger, Path):
        with contextlib.closing(sqlite3.connect(ledger, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                db.execute("ROLLBACK")
    else:
        with psycopg.connect(ledger.url) as db:  # one transaction, rolled back on the way out
            db.execute("LOCK TABLE readings, batches, meters IN EXCLUSIVE MODE")  # reads still pass
            yield
            db.rollback()
