"""Identity and seq accounting with the real parts (issue 16, findings 3, 4 and 8): a collector process
behind a real Mosquitto, gateways publishing with mosquitto_pub on their own topics."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.processes import Mosquitto, Process, free_port, wait_until, write_collector_config
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    Channel,
    ClockState,
    Quality,
    Reading,
    ReadingsBatch,
    topic,
)

pytestmark = pytest.mark.services

SITE = "hanoi-office"


class Collector:
    def __init__(self, tmp_path: Path, broker: Mosquitto) -> None:
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        config = write_collector_config(
            tmp_path / "collector.yaml", broker, ledger=tmp_path / "ledger.db", api_port=port, tsdb_url=None,
            client_id="trust-test",
        )  # fmt: skip
        args = [sys.executable, "-m", "app", "collector", "run", "--config", str(config)]
        self.process = Process("collector", args, tmp_path / "collector.log").start()
        wait_until(lambda: self.metric("kilowatch_collector_mqtt_connected") == 1, 30, "the collector")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.api + path, timeout=5) as response:  # noqa: S310 - loopback
            return json.load(response)

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"{self.api}/metrics", timeout=2) as response:  # noqa: S310
                lines = response.read().decode().splitlines()
        except OSError:
            return -1
        values = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + " ")]
        return values[0] if values else 0.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    running = Mosquitto.start(tmp_path / "mosquitto")
    yield running
    running.stop()


@pytest.fixture
def collector(tmp_path: Path, broker: Mosquitto) -> Iterator[Collector]:
    running = Collector(tmp_path, broker)
    yield running
    running.process.stop()


def publish(
    broker: Mosquitto, gateway: str, meter: str, kwh: float, *, seq: int, spool: str, ts: int
) -> None:
    """What gateway `gateway` publishes on its own readings topic (the ACL allows it)."""
    reading = Reading(
        meter=meter, profile="eastron-sdm630", ts=ts, values={"energy_import_kwh": kwh}, quality=Quality.GOOD,
        clock=ClockState.SYNCED,
    )  # fmt: skip
    message = ReadingsBatch(
        schema_version=SCHEMA_VERSION, site=SITE, gateway=gateway, seq=seq, spool_id=spool, sent_at=ts,
        readings=[reading],
    )  # fmt: skip
    broker.publish(topic(SITE, gateway, Channel.READINGS), message.model_dump_json())


def test_a_gateway_cannot_write_another_gateways_meter(broker: Mosquitto, collector: Collector) -> None:
    now = time.time_ns() // 1_000_000
    publish(broker, "gw-02", "gw-02.main", 100.0, seq=0, spool="5b002002", ts=now - 60_000)
    wait_until(
        lambda: collector.metric("kilowatch_collector_readings_accepted_total") == 1, 20, "gw-02's reading"
    )

    publish(broker, "gw-01", "gw-02.main", 2_000_000.0, seq=0, spool="5b001001", ts=now)
    foreign = 'kilowatch_collector_readings_rejected_total{reason="foreign_meter"}'
    wait_until(lambda: collector.metric(foreign) == 1, 20, "the spoofed reading refused")

    assert collector.metric("kilowatch_collector_readings_accepted_total") == 1
    latest = collector.get("/api/v1/meters/gw-02.main/latest")
    assert latest["values"] == {"energy_import_kwh": 100.0}
    [meter] = collector.get("/api/v1/meters")
    assert (meter["site"], meter["gateway"]) == (SITE, "gw-02")
    [event] = collector.get("/api/v1/gateways/events")
    assert (event["gateway"], event["kind"], event["readings"]) == ("gw-01", "foreign_meter", 1)
    assert f"gw-02.main (bound to {SITE}/gw-02)" in event["detail"]
    assert "Traceback" not in collector.process.log()


def test_a_seq_jump_is_an_event_and_a_late_first_seq_a_gap(broker: Mosquitto, collector: Collector) -> None:
    now = time.time_ns() // 1_000_000
    publish(broker, "gw-01", "gw-01.main", 10.0, seq=0, spool="5b001001", ts=now - 3000)
    publish(broker, "gw-01", "gw-01.main", 10.1, seq=10**15, spool="5b001001", ts=now - 2000)
    publish(broker, "gw-02", "gw-02.main", 20.0, seq=30, spool="5b002002", ts=now - 1000)
    wait_until(lambda: collector.metric("kilowatch_collector_readings_accepted_total") == 3, 20, "3 readings")

    gaps = collector.get("/api/v1/gateways/gaps")
    assert [(g["gateway"], g["first_seq"], g["last_seq"], g["batches"]) for g in gaps] == [
        ("gw-02", 0, 29, 30)
    ]
    assert collector.metric("kilowatch_collector_batches_missing") == 30
    [event] = collector.get("/api/v1/gateways/events")
    assert (event["gateway"], event["kind"]) == ("gw-01", "spool_epoch")
    assert f"seq {10**15} follows 0" in event["detail"]
    assert "Traceback" not in collector.process.log()
