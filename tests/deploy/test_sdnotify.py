"""systemd notifications through a real datagram socket standing in for systemd's $NOTIFY_SOCKET: the
agent and the collector say READY=1, ping WATCHDOG=1 while their loops run, and a hung loop stops the pings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from agent import runner
from agent.config import AgentConfig
from agent.transport import MemoryReader
from app.processes import Mosquitto, Process, free_port, wait_until
from kilowatch.profiles import Table, load_builtin
from kilowatch.sdnotify import Liveness, notify, watchdog_interval_s
from tests.agent_support import full_map

WATCHDOG_USEC = 200_000
"""WatchdogSec=0.2: a ping every 0.1 s."""


class SystemdSocket:
    """The receiving end of sd_notify: an AF_UNIX datagram socket read by a thread, as systemd reads it
    (a queue nobody empties would refuse the service's datagrams)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self._read, name="systemd-socket")
        self.reader.start()

    def _read(self) -> None:
        while not self.closing.is_set():
            with contextlib.suppress(TimeoutError):
                self.received.append((time.monotonic(), self.sock.recv(4096).decode()))

    def messages(self) -> list[str]:
        """Every message so far, oldest first."""
        return [text for _, text in list(self.received)]

    def since(self, at: float) -> list[str]:
        return [text for when, text in list(self.received) if when >= at]

    def close(self) -> None:
        self.closing.set()
        self.reader.join()
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SystemdSocket]:
    receiver = SystemdSocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(receiver.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield receiver
    receiver.close()


def test_nothing_is_sent_outside_systemd() -> None:
    assert notify("READY=1", environ={}) is False
    assert watchdog_interval_s({}) is None


def test_watchdog_is_for_the_process_systemd_names() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}) == 60.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}) is None


def test_liveness_goes_stale_without_beats() -> None:
    now = [0.0]
    alive = Liveness(["a", "b"], stale_after_s=10, clock=lambda: now[0])
    now[0] = 8.0
    alive.beat("a")
    assert alive()
    now[0] = 15.0
    assert (alive(), alive.stale()) == (False, ["b"])


def agent_config(spool: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "site": "s1",
            "gateway": "g1",
            "poll_interval_s": 0.1,
            "mqtt": {"port": free_port(), "reconnect_min_s": 0.05},  # no broker: polling goes on anyway
            "spool": {"path": spool, "commit_interval_s": 0.05},
            "clock": {"mode": "synced"},
            "buses": [
                {
                    "name": f"bus-{name}",
                    "transport": "tcp",
                    "host": "192.0.2.1",  # never contacted: the tests read from memory
                    "meters": [{"id": f"m-{name}", "profile": "eastron-sdm630", "unit": 1}],
                }
                for name in "ab"
            ],
        }
    )


class HangingReader:
    """A bus whose first read never returns (a driver stuck below every timeout)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_agent_is_ready_and_pings_while_its_buses_cycle(systemd: SystemdSocket, tmp_path: Path) -> None:
    _, words = full_map(load_builtin("eastron-sdm630"))
    reader = MemoryReader({1: words})
    stop = asyncio.Event()
    agent = asyncio.create_task(
        runner.run(agent_config(tmp_path / "spool.db"), open_reader=lambda bus: reader, stop=stop)
    )
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(agent, 20)
    messages = systemd.messages()
    assert messages[0] == "READY=1"
    assert messages[-1] == "STOPPING=1"
    assert messages[1:-1] == ["WATCHDOG=1"] * len(messages[1:-1])
    assert len(messages[1:-1]) >= 5  # every 0.1 s for about a second


async def test_a_hung_bus_stops_the_pings(
    systemd: SystemdSocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "HUNG_AFTER_S", 0.2)  # hung after 3 x 0.1 + 0.2 s without a cycle's end
    _, words = full_map(load_builtin("eastron-sdm630"))
    readers: dict[str, MemoryReader | HangingReader] = {
        "bus-a": MemoryReader({1: words}),
        "bus-b": HangingReader(),
    }
    stop = asyncio.Event()
    agent = asyncio.create_task(
        runner.run(agent_config(tmp_path / "spool.db"), open_reader=lambda bus: readers[bus.name], stop=stop)
    )
    await asyncio.sleep(1.0)
    quiet_from = time.monotonic()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(agent, 20)
    messages = systemd.messages()
    assert messages[:2] == ["READY=1", "WATCHDOG=1"]  # pings while the bus is young
    assert systemd.since(quiet_from) == ["STOPPING=1"]  # then none: systemd would restart the agent


async def test_a_blocked_event_loop_stops_the_pings(systemd: SystemdSocket, tmp_path: Path) -> None:
    """A synchronous call that hangs freezes every task, the pinger included."""
    _, words = full_map(load_builtin("eastron-sdm630"))
    reader = MemoryReader({1: words})
    stop = asyncio.Event()
    agent = asyncio.create_task(
        runner.run(agent_config(tmp_path / "spool.db"), open_reader=lambda bus: reader, stop=stop)
    )
    await asyncio.sleep(0.5)
    blocked_from = time.monotonic()
    time.sleep(0.6)  # noqa: ASYNC251 - the hang under test
    assert systemd.since(blocked_from) == []
    blocked_from = time.monotonic()
    await asyncio.sleep(0.5)
    assert "WATCHDOG=1" in systemd.since(blocked_from)  # the loop runs again, and so do the pings
    stop.set()
    await asyncio.wait_for(agent, 20)


@pytest.mark.services
def test_collector_is_ready_and_pings(systemd: SystemdSocket, tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
        "  username: collector\n  password: pw-s3cret\n"
        f"ledger:\n  path: {tmp_path / 'kilowatch.db'}\n"
        f"api:\n  port: {free_port()}\n"
    )
    collector = Process(
        "collector",
        [sys.executable, "-c", "from collector.cli import app; app()", "run", "--config", str(config)],
        tmp_path / "collector.log",
        env=dict(os.environ),
    ).start()
    try:
        wait_until(lambda: systemd.messages().count("WATCHDOG=1") >= 3, 20, "the collector's pings")
        assert systemd.messages()[0] == "READY=1"
    finally:
        assert collector.stop() == 0, collector.log()
    assert systemd.messages()[-1] == "STOPPING=1"
