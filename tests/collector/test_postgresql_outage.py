"""A PostgreSQL ledger under a running `kilowatch collector run`, for real: a server of its own per test,
down when the collector starts, going away mid-stream (its sessions terminated, the server stopped and
started again) and refusing writes (the database made read-only).

Nothing is acknowledged that is not committed: the broker keeps what the ledger could not take, and once the
server is back every batch published is in the ledger exactly once. The password in the ledger's URL never
appears in what the collector logs or answers.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from app.processes import UNBOUNDED_QUEUE, Mosquitto, PostgreSQL, Process, free_port, wait_until
from collector.store import LedgerReader, Postgres
from kilowatch.mqtt_contract import SCHEMA_VERSION, Channel, topic
from tests.ledger_support import admin, terminate_backends

pytestmark = pytest.mark.services

METERS = 5
NOW_MS = int(time.time() * 1000)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PostgreSQL]:
    """A PostgreSQL of this test's own (it is stopped and started), with an empty database `ledger`."""
    server = PostgreSQL.start(tmp_path / "postgresql")
    with admin(server) as db:
        db.execute("CREATE DATABASE ledger")
    yield server
    server.remove()


def payload(seq: int) -> bytes:
    ts = NOW_MS - 3_600_000 + seq * 1000
    readings = [
        {"meter": f"m{m}", "profile": "eastron-sdm630", "ts": ts, "quality": "good", "clock": "synced",
         "values": {"energy_import_kwh": seq / 100 + m, "active_power_w": 360.0}}
        for m in range(METERS)
    ]  # fmt: skip
    batch = {
        "schema_version": SCHEMA_VERSION, "site": "site1", "gateway": "gw1", "seq": seq, "spool_id": "0dd5eed5",
        "sent_at": ts, "readings": readings,
    }  # fmt: skip
    return json.dumps(batch).encode()


def write_config(
    tmp_path: Path, broker: Mosquitto, url: str, port: int, share_group: str | None = None
) -> Path:
    config = {
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "client_id": "postgresql-test",
            "share_group": share_group,
        },
        "ledger": {"url": url},
        "api": {"host": "127.0.0.1", "port": port},
    }
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def collector_args(config: Path) -> list[str]:
    return [sys.executable, "-m", "app", "collector", "run", "--config", str(config)]


class Stack:
    """Mosquitto, a collector on the PostgreSQL ledger, and an agent's publisher."""

    def __init__(self, tmp_path: Path, server: PostgreSQL, share_group: str | None = None) -> None:
        self.server = server
        self.ledger = Postgres(server.url("ledger"))
        self.broker = Mosquitto.start(tmp_path / "mosquitto", extra_conf=UNBOUNDED_QUEUE)
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        config = write_config(tmp_path, self.broker, self.ledger.url, port, share_group)
        self.collector = Process("collector", collector_args(config), tmp_path / "collector.log").start()
        wait_until(lambda: self.health()["mqtt_connected"], 30, "the collector to connect")
        self.publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="postgresql-agent")
        self.publisher.connect(self.broker.host, self.broker.port)
        self.publisher.loop_start()
        self.published = 0

    def health(self) -> dict[str, Any]:
        """/healthz, also when it answers 503 (the ledger unreadable)."""
        assert self.collector.alive(), self.collector.log()[-3000:]
        try:
            with urllib.request.urlopen(f"{self.api}/healthz", timeout=5) as response:  # noqa: S310 - loopback
                answer: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            answer = json.load(exc)
        return answer

    def publish(self, n: int) -> None:
        for _ in range(n):
            self.publisher.publish(topic("site1", "gw1", Channel.READINGS), payload(self.published), qos=1)
            self.published += 1

    def stored(self) -> int:
        with LedgerReader(self.ledger) as reader:
            return sum(len(reader.readings(f"m{m}", 0, 2**62)) for m in range(METERS))

    def all_stored_once(self, what: str) -> None:
        wait_until(
            lambda: self.health()["ledger_error"] is None and self.stored() == self.published * METERS,
            90,
            f"{what}: every batch stored once",
        )
        with LedgerReader(self.ledger) as reader:
            assert reader.stored_batches() == self.published
            assert reader.missing_batches() == 0

    def close(self) -> None:
        self.publisher.loop_stop()
        self.publisher.disconnect()
        self.collector.stop()
        self.broker.stop()


def test_a_postgresql_down_at_start_stops_the_collector_naming_it_without_the_password(
    tmp_path: Path, server: PostgreSQL
) -> None:
    broker = Mosquitto.start(tmp_path / "mosquitto")
    try:
        server.stop()
        url = server.url("ledger")
        config = write_config(tmp_path, broker, url, free_port())
        result = subprocess.run(
            collector_args(config), capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        broker.stop()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"cannot open the ledger postgresql://kilowatch@127.0.0.1:{server.port}/ledger" in output, output
    assert server.password not in output


@pytest.mark.parametrize("share_group", [None, secrets.token_hex(16)], ids=["collector", "replica"])
def test_postgresql_going_away_mid_stream_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, server: PostgreSQL, share_group: str | None
) -> None:
    """Also as a replica (a share group): its leases and the jobs under them wait for the server too."""
    stack = Stack(tmp_path, server, share_group)
    try:
        stack.publish(20)
        stack.all_stored_once("before")
        for cycle in range(3):
            # Its sessions are ended (an administrator, a failover): the next transaction opens another.
            assert terminate_backends(server, "ledger") >= 1
            stack.publish(10)
            stack.all_stored_once(f"cycle {cycle}: after the sessions were terminated")
            # The server goes away while batches arrive: ingestion pauses, nothing is acknowledged.
            server.stop()
            stack.publish(10)
            wait_until(lambda: stack.health()["ledger_error"] is not None, 60, "the ledger error to show")
            health = stack.health()
            assert health["status"] == "failing"
            assert not health["ledger_ok"]
            stack.publish(10)
            time.sleep(1)
            assert stack.collector.alive()
            server.restart()
            stack.all_stored_once(f"cycle {cycle}: after the server came back")
    finally:
        stack.close()
    log = stack.collector.log()
    assert "the ledger cannot commit" in log
    assert server.password not in log
    assert "starting it again" not in log  # no task failed for the outage


def test_a_postgresql_that_refuses_writes_pauses_ingestion_until_it_takes_them(
    tmp_path: Path, server: PostgreSQL
) -> None:
    stack = Stack(tmp_path, server)
    try:
        stack.publish(10)
        stack.all_stored_once("before")
        with admin(server) as db:
            db.execute("ALTER DATABASE ledger SET default_transaction_read_only = on")
        terminate_backends(server, "ledger")  # new sessions are read-only, as on a standby
        stack.publish(10)
        # (The first try may meet the terminated session; the next one is refused.)
        wait_until(
            lambda: "read-only" in (stack.health()["ledger_error"] or ""), 60, "the refused write to show"
        )
        assert stack.health()["status"] == "degraded"
        stack.publish(10)
        time.sleep(1)
        assert stack.stored() == 10 * METERS
        with admin(server) as db:
            db.execute("ALTER DATABASE ledger RESET default_transaction_read_only")
        stack.all_stored_once("once it takes writes again")
    finally:
        stack.close()
    assert server.password not in stack.collector.log()
