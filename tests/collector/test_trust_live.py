"""Identity and seq accounting with the real parts (issue 16, findings 3, 4 and 8): a collector process
behind a real Mosquitto (plain, and with the shipped deploy/mosquitto.conf and ACL), gateways publishing on
their own topics."""

from __future__ import annotations

import contextlib
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.processes import Mosquitto, Process, free_port, get_json, wait_until, write_collector_config
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    Channel,
    ClockState,
    Quality,
    Reading,
    ReadingsBatch,
    topic,
)
from tests.api_support import api_key
from tests.deploy.test_broker import COLLECTOR, GATEWAY, PASSWORDS, deploy
from tests.services import TestCertificates as Certificates

pytestmark = pytest.mark.services

SITE = "hanoi-office"


class Collector:
    """A collector process with the config at `config`, serving its API on `api_port`."""

    def __init__(self, tmp_path: Path, config: Path, api_port: int) -> None:
        self.api = f"http://127.0.0.1:{api_port}"
        args = [sys.executable, "-m", "app", "collector", "run", "--config", str(config)]
        self.process = Process("collector", args, tmp_path / "collector.log").start()
        try:
            wait_until(lambda: self.metric("kilowatch_collector_mqtt_connected") == 1, 30, "the collector")
        except BaseException:
            self.process.stop()  # no fixture teardown runs when set-up fails
            raise
        self.key = api_key(tmp_path / "ledger.db")

    def get(self, path: str) -> Any:
        return get_json(self.api + path, 5, key=self.key)

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
    port = free_port()
    config = write_collector_config(
        tmp_path / "collector.yaml", broker, ledger=tmp_path / "ledger.db", api_port=port, tsdb_url=None,
        client_id="trust-test",
    )  # fmt: skip
    running = Collector(tmp_path, config, port)
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


async def test_with_the_shipped_broker_config_a_gateway_cannot_write_a_provisioned_meter(
    tmp_path: Path,
) -> None:
    """deploy/mosquitto.conf with its ACL: gw-01 may write only its own topics, and does so, naming a meter
    the sites file gives to gw-02. The collector refuses it, counts it and reports it."""
    deployed = deploy(tmp_path / "broker", Certificates.generate(tmp_path / "pki"))
    api_port = free_port()
    sites = {SITE: {"meters": {"gw-02.main": {"role": "sub_meter", "rated_kw": 10, "gateway": "gw-02"}}}}
    (tmp_path / "sites.yaml").write_text(yaml.safe_dump({"sites": sites}))
    config = {
        "mqtt": {
            "host": deployed.broker.host, "port": deployed.broker.port, "username": COLLECTOR,
            "password": PASSWORDS[COLLECTOR], "client_id": COLLECTOR,
        },
        "ledger": {"path": str(tmp_path / "ledger.db")}, "api": {"host": "127.0.0.1", "port": api_port, "metrics_auth": "none"},
        "detection": {"sites": str(tmp_path / "sites.yaml")},
    }  # fmt: skip
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump(config))
    with contextlib.ExitStack() as stack:
        stack.callback(deployed.broker.stop)
        collector = Collector(tmp_path, tmp_path / "collector.yaml", api_port)
        stack.callback(collector.process.stop)
        now = time.time_ns() // 1_000_000
        site, gateway = GATEWAY.split(".")
        assert site == SITE
        reading = Reading(
            meter="gw-02.main", profile="eastron-sdm630", ts=now, values={"energy_import_kwh": 2_000_000.0},
            quality=Quality.GOOD, clock=ClockState.SYNCED,
        )  # fmt: skip
        spoof = ReadingsBatch(
            schema_version=SCHEMA_VERSION, site=SITE, gateway=gateway, seq=0, spool_id="5b001001", sent_at=now,
            readings=[reading],
        )  # fmt: skip
        async with deployed.gateway().client(identifier=GATEWAY, timeout=10) as client:
            await client.publish(topic(SITE, gateway, Channel.READINGS), spoof.model_dump_json(), qos=1)
        foreign = 'kilowatch_collector_readings_rejected_total{reason="foreign_meter"}'
        wait_until(lambda: collector.metric(foreign) == 1, 20, "the spoofed reading refused")
        assert collector.metric("kilowatch_collector_readings_accepted_total") == 0
        assert collector.get("/api/v1/meters") == []
        [event] = collector.get("/api/v1/gateways/events")
        assert (event["gateway"], event["kind"], event["readings"]) == (gateway, "foreign_meter", 1)
        assert f"gw-02.main (bound to {SITE}/gw-02)" in event["detail"]
        assert "Traceback" not in collector.process.log()
