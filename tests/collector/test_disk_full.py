"""A full disk under a running `kilowatch collector run`, for real: its ledger lives on a small tmpfs the test
mounts and fills, ten times over, with and without a TSDB (VictoriaMetrics, stopped while batches arrive and
started again once the disk is full, so that the TSDB writer's outbox delete meets the full disk).

Each time: /healthz turns degraded naming the ledger's error, ingestion pauses (nothing is acknowledged, the
broker keeps the messages) and the process never exits; once the disk has room again everything published is
in the ledger exactly once (and in the TSDB). A collector started on the full disk waits for room instead of
exiting, /healthz failing meanwhile, and then stores what its broker session queued, once.
"""

from __future__ import annotations

import errno
import json
import os
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

from app.processes import (
    UNBOUNDED_QUEUE,
    Mosquitto,
    Process,
    VictoriaMetrics,
    free_port,
    get_json,
    require_binary,
    wait_until,
)
from collector.store import LedgerReader
from kilowatch.mqtt_contract import SCHEMA_VERSION, Channel, topic
from tests.api_support import api_key

pytestmark = pytest.mark.services

CYCLES = 10
METERS = 20
DISK = "12m"
NOW_MS = int(time.time() * 1000)
SPOOL = "d15cf011"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs, mounted for the test (CI runs as root) and unmounted after it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounting = [require_binary("mount"), "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)]
    result = subprocess.run(mounting, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs (needs root, as in CI): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run([require_binary("umount"), "-l", str(mount)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the file system has no byte left; returns it (delete it to free the space)."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (2**20, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def payload(seq: int) -> bytes:
    """Batch `seq`: one reading of every meter, one second after the last."""
    ts = NOW_MS - 3_600_000 + seq * 1000
    readings = [
        {
            "meter": f"m{m}",
            "profile": "eastron-sdm630",
            "ts": ts,
            "values": {"energy_import_kwh": seq / 100 + m, "active_power_w": 360.0, "voltage_l1_v": 230.0},
            "quality": "good",
            "clock": "synced",
        }
        for m in range(METERS)
    ]
    batch = {
        "schema_version": SCHEMA_VERSION, "site": "site1", "gateway": "gw1", "seq": seq, "spool_id": SPOOL,
        "sent_at": ts, "readings": readings,
    }  # fmt: skip
    return json.dumps(batch).encode()


class Stack:
    def __init__(self, tmp_path: Path, disk: Path, *, tsdb: bool) -> None:
        self.tmp = tmp_path
        self.broker = Mosquitto.start(tmp_path / "mosquitto", extra_conf=UNBOUNDED_QUEUE)
        self.victoria = VictoriaMetrics.start(tmp_path / "victoria-metrics") if tsdb else None
        self.ledger = disk / "ledger.db"
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        config: dict[str, Any] = {
            "mqtt": {"host": self.broker.host, "port": self.broker.port, "client_id": "disk-full-test"},
            "ledger": {"path": str(self.ledger)},
            "api": {"host": "127.0.0.1", "port": port},
        }
        if self.victoria is not None:
            config["tsdb"] = {"url": self.victoria.url, "retry_min_s": 0.2, "retry_max_s": 1.0}
        (tmp_path / "collector.yaml").write_text(yaml.safe_dump(config))
        args = [sys.executable, "-m", "app", "collector", "run", "--config", str(tmp_path / "collector.yaml")]
        self.collector = Process("collector", args, tmp_path / "collector.log").start()
        wait_until(lambda: self.health()["mqtt_connected"], 30, "the collector to connect")
        self.key = api_key(self.ledger)  # for /metrics, made while the disk has room
        self.publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="disk-full-agent")
        self.publisher.connect(self.broker.host, self.broker.port)
        self.publisher.loop_start()
        self.published = 0

    def health(self) -> dict[str, Any]:
        assert self.collector.alive(), self.collector.log()[-3000:]
        health: dict[str, Any] = get_json(f"{self.api}/healthz")
        return health

    def metric(self, name: str) -> float:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.api}/metrics", headers={"Authorization": f"Bearer {self.key}"}
        )
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def publish(self, n: int) -> None:
        for _ in range(n):
            self.publisher.publish(topic("site1", "gw1", Channel.READINGS), payload(self.published), qos=1)
            self.published += 1

    def stored(self) -> int:
        with LedgerReader(self.ledger) as reader:
            return len(reader.readings("m0", 0, 2**62))

    def restart_victoria(self) -> None:
        assert self.victoria is not None
        old = self.victoria.process
        self.victoria.process = Process(old.name, old.args, old.log_path).start()
        wait_until(self.victoria.healthy, 20, "victoria-metrics to come back")

    def close(self) -> None:
        self.publisher.loop_stop()
        self.publisher.disconnect()
        self.collector.stop()
        if self.victoria is not None:
            self.victoria.stop()
        self.broker.stop()


@pytest.mark.parametrize("tsdb", [False, True], ids=["ledger-only", "with-tsdb"])
def test_a_full_disk_pauses_ingestion_and_loses_nothing(tmp_path: Path, small_disk: Path, tsdb: bool) -> None:
    stack = Stack(tmp_path, small_disk, tsdb=tsdb)
    try:
        for cycle in range(CYCLES):
            if stack.victoria is not None:
                stack.victoria.stop()  # batches arrive meanwhile: the outbox fills
            stack.publish(20)
            wait_until(
                lambda: stack.stored() == stack.published, 30, f"cycle {cycle}: batches before the fill"
            )
            filler = fill(small_disk)
            if stack.victoria is not None:
                stack.restart_victoria()  # the writer drains the outbox; the ledger cannot forget it
            # Publish until the ledger cannot take more: ingestion pauses, the collector stays.
            deadline = time.monotonic() + 60
            while stack.health()["ledger_error"] is None:
                assert time.monotonic() < deadline, f"cycle {cycle}: the disk never got full"
                stack.publish(5)
                time.sleep(0.05)
            health = stack.health()
            assert health["status"] == "degraded"
            assert "full" in health["ledger_error"] or "disk" in health["ledger_error"], health
            assert stack.metric("kilowatch_collector_ledger_writable") == 0
            stack.publish(10)  # more while paused: the broker keeps them
            time.sleep(0.5)
            assert stack.collector.alive()
            filler.unlink()
            wait_until(
                lambda: stack.health()["ledger_error"] is None and stack.stored() == stack.published,
                60,
                f"cycle {cycle}: every batch once there is room again",
            )
            assert stack.health()["status"] == "ok"
        assert stack.collector.alive()
        with LedgerReader(stack.ledger) as reader:
            for m in range(METERS):
                got = [r.ts for r in reader.readings(f"m{m}", 0, 2**62)]
                assert got == [NOW_MS - 3_600_000 + seq * 1000 for seq in range(stack.published)], f"m{m}"
            assert reader.missing_batches() == 0
        if stack.victoria is not None:
            victoria = stack.victoria
            want = stack.published * METERS

            def points() -> int:
                series = victoria.export('{__name__="meter_energy_import_kwh"}')
                return sum(len(s["timestamps"]) for s in series)

            wait_until(lambda: points() == want, 60, "every reading in the TSDB")
            wait_until(
                lambda: stack.metric("kilowatch_collector_tsdb_outbox_rows") == 0, 30, "an empty outbox"
            )
        log = stack.collector.log()
        assert "Traceback" not in log
        assert "ingestion paused" in log
        print(
            f"\n{CYCLES} full disks, {stack.published} batches, {os.path.getsize(stack.ledger)} bytes of ledger"
        )
    finally:
        stack.close()


def waiting_health(api: str) -> tuple[int, dict[str, Any]]:
    """/healthz's status code and body, a 503 included."""
    try:
        return 200, get_json(f"{api}/healthz")
    except urllib.error.HTTPError as exc:
        body: dict[str, Any] = json.load(exc)
        return exc.code, body


def test_a_collector_started_on_a_full_disk_waits_for_room(tmp_path: Path, small_disk: Path) -> None:
    """Started where its ledger cannot be created, the collector stays up (/healthz failing with the reason),
    takes nothing from the broker, and once there is room stores everything its session queued, once."""
    stack = Stack(tmp_path, small_disk, tsdb=False)  # its first run creates its session at the broker
    try:
        assert stack.collector.stop() == 0
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
            (small_disk / name).unlink(missing_ok=True)
        filler = fill(small_disk)
        stack.publish(30)  # queued at the broker for the collector's session
        stack.collector = Process(
            stack.collector.name, stack.collector.args, stack.collector.log_path
        ).start()
        code, health = wait_until(lambda: waiting_health(stack.api), 30, "the waiting collector's /healthz")
        assert code == 503, health
        assert health["status"] == "failing", health
        assert "full" in health["ledger_error"], health
        stack.publish(10)  # more while it waits
        time.sleep(3)  # several tries to open the ledger
        assert stack.collector.alive(), stack.collector.log()[-3000:]
        assert waiting_health(stack.api)[0] == 503
        filler.unlink()
        wait_until(lambda: stack.stored() == stack.published, 60, "every queued batch once there is room")
        assert waiting_health(stack.api)[0] == 200
        wait_until(lambda: stack.health()["status"] == "ok", 30, "a healthy collector")
        with LedgerReader(stack.ledger) as reader:
            for m in range(METERS):
                got = [r.ts for r in reader.readings(f"m{m}", 0, 2**62)]
                assert got == [NOW_MS - 3_600_000 + seq * 1000 for seq in range(stack.published)], f"m{m}"
            assert reader.missing_batches() == 0
        log = stack.collector.log()
        assert log.count("waiting for room") == 1, log[-3000:]
        assert "Traceback" not in log
    finally:
        stack.close()
