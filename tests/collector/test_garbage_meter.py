"""A meter answering garbage (issue 16, finding 5), with the real parts: the simulator's
``--fault UNIT:garbage`` (random words in well-formed frames), the agent, Mosquitto and the collector.
Nothing of it is stored as a good value outside its physical range, and no interval holds more energy
than the meter's maximum power could deliver."""

from __future__ import annotations

import sqlite3
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.processes import Mosquitto, Process, free_port, get_json, wait_until
from collector.intervals import STEP_SLACK_KWH
from collector.store import RATED_HEADROOM, LedgerReader
from kilowatch.quantities import out_of_range
from kilowatch.timebase import SLOT_HOURS
from tests.api_support import api_key

pytestmark = pytest.mark.services

SITE, GATEWAY = "xuong", "gw-01"
METERS = {"healthy": 1, "garbage": 2}
RATED_KW = 10.0


def kilowatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def get(url: str, key: str) -> Any:
    return get_json(url, 5, key=key)


def metric(api: str, name: str) -> float:
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + " "))


@pytest.fixture
def chain(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[str, Path]]:
    modbus_port, api_port = free_port(), free_port()
    agent = {
        "site": SITE, "gateway": GATEWAY, "poll_interval_s": 1,
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port}, "clock": {"mode": "synced"},
        "buses": [{
            "name": "sim", "transport": "tcp", "host": "127.0.0.1", "port": modbus_port,
            "meters": [{"id": m, "profile": "eastron-sdm630", "unit": u} for m, u in METERS.items()],
        }],
    }  # fmt: skip
    sites = {
        SITE: {"meters": {m: {"role": "sub_meter", "rated_kw": RATED_KW, "gateway": GATEWAY} for m in METERS}}
    }
    ledger = tmp_path / "ledger.db"
    collector = {
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "client_id": "garbage-test"},
        "ledger": {"path": str(ledger)}, "api": {"host": "127.0.0.1", "port": api_port, "metrics_auth": "none"},
        "detection": {"sites": str(tmp_path / "sites.yaml")},
    }  # fmt: skip
    for name, config in (("agent", agent), ("sites", {"sites": sites}), ("collector", collector)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    sim = kilowatch(
        "sim", "serve", "--profile", "eastron-sdm630", "--units", "1-2", "--tcp", f"127.0.0.1:{modbus_port}",
        "--update-interval", "1", "--fault", f"{METERS['garbage']}:garbage",
    )  # fmt: skip
    procs = [Process("sim", sim, tmp_path / "sim.log").start()]
    wait_until(lambda: "serving" in procs[0].log(), 30, "the simulator to listen")
    api = f"http://127.0.0.1:{api_port}"
    procs.append(
        Process("collector", kilowatch("collector", "run", "-c", str(tmp_path / "collector.yaml")),
                tmp_path / "collector.log").start()
    )  # fmt: skip
    wait_until(lambda: get_json(f"{api}/healthz", 5)["mqtt_connected"], 30, "the collector to connect")
    procs.append(
        Process("agent", kilowatch("agent", "run", "--config", str(tmp_path / "agent.yaml")),
                tmp_path / "agent.log").start()
    )  # fmt: skip
    yield api, ledger
    for proc in reversed(procs):
        proc.stop()
    for proc in procs:
        assert "Traceback" not in proc.log(), proc.log()


def test_garbage_is_never_good_nor_energy(chain: tuple[str, Path]) -> None:
    api, ledger = chain
    wait_until(lambda: metric(api, "kilowatch_collector_readings_accepted_total") >= 40, 90, "40 readings")
    time.sleep(5)  # and a few more cycles of garbage

    with LedgerReader(ledger) as reader:
        rows = [(r.meter_id, r.quality, r.values) for m in METERS for r in reader.readings(m, 0, 2**62)]
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        intervals = db.execute("SELECT meter_id, energy_import_kwh, samples FROM intervals").fetchall()
    assert {meter for meter, _, _ in rows} == set(METERS)
    for meter, quality, values in rows:
        for name, value in values.items():
            assert out_of_range(name, value) is None, (meter, quality, name, value)
    assert any(quality == "bad" for meter, quality, _ in rows if meter == "garbage")
    max_kw = RATED_HEADROOM * RATED_KW
    for meter, energy, samples in intervals:
        assert (energy or 0.0) <= max_kw * SLOT_HOURS + STEP_SLACK_KWH * samples, (meter, energy)
    assert metric(api, 'kilowatch_collector_bad_values_total{reason="out_of_range"}') > 0
    assert metric(api, 'kilowatch_collector_bad_values_total{reason="counter_step"}') > 0

    key = api_key(ledger)
    latest = get(f"{api}/api/v1/meters/garbage/latest", key)
    assert set(latest["value_reasons"]) <= set(latest["value_quality"])
    assert all(latest["value_quality"][name] == "bad" for name in latest["value_reasons"])
    healthy = get(f"{api}/api/v1/meters/healthy/latest", key)
    assert (healthy["quality"], healthy["value_reasons"]) == ("good", {})
