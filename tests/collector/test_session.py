"""The collector as a child process against a real Mosquitto: killed (SIGKILL), stopped (SIGTERM) or
with the broker restarted while an agent-like publisher sends, it ends up with every reading exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
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
        # As root Mosquitto drops privileges and could not write its database; queue without limit.
        conf = f"persistence true\npersistence_location {work}/\nuser root\nmax_queued_messages 0\n"
        self.broker = Mosquitto.start(work, extra_conf=conf)
        self.api = f"http://127.0.0.1:{free_port()}"
        self.ledger = ledger
        self.config = write_collector_config(
            tmp_path / "collector.yaml", self.broker, ledger=ledger if isinstance(ledger, Path) else ledger.url,
            api_port=int(self.api.rsplit(":", 1)[1]), tsdb_url=None, client_id="session-test",
            retention_days=36_600,  # the readings are stamped in 2024
        )  # fmt: skip
        self.collector: Process | None = None

    def start_collector(self) -> None:
        args = [sys.executable, "-m", "app", "collector", "run", "--config", str(self.config)]
        self.collector = Process("collector", args, self.tmp / "collector.log").start()
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
