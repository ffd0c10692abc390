"""The whole path with real parts, each as its own process started by its real command:

simulator (Modbus TCP) -> agent -> Mosquitto -> collector -> VictoriaMetrics and SQLite -> API,

checked against mbpoll (a third-party Modbus master) reading the same simulator, the published JSON Schema
(what the agent put on the wire), and each store against the others.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

import jsonschema
import pytest
import yaml

from app.processes import (
    Mosquitto,
    Process,
    VictoriaMetrics,
    free_port,
    get_json,
    require_binary,
    wait_until,
    write_collector_config,
)
from kilowatch.mqtt_contract import Channel, ReadingsBatch, subscription, topic
from tests.api_support import api_key
from tests.mbpoll import MbpollError, read_floats
from tests.paths import REPO

SITE, GATEWAY = "e2e-office", "gw-e2e"
METERS = {"main": 1, "floor-1": 2, "floor-2": 3}
UPDATE_S = 10  # the simulated meters refresh their registers every 10 s; the agent polls every second
DOCS = REPO / "docs"
MBPOLL_REL = 5.1e-6  # mbpoll prints 6 significant digits: at most half a unit of the 6th off, relatively
# What mbpoll reads of unit 1 (wire address, number of float32 values) and the quantities found there.
MBPOLL_READS = [
    (0x00, ["voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a", "current_l3_a"]),
    (0x34, ["active_power_w"]),
    (0x48, ["energy_import_kwh"]),
]


def kilowatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def get(url: str) -> Any:
    return get_json(url, 5)


def metrics_text(api: str) -> str:
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        return str(response.read().decode())


def samples_by_ts(vm: VictoriaMetrics, meter: str) -> dict[int, dict[str, float]]:
    """Every stored point of one meter from VictoriaMetrics: ts -> {quantity: value}."""
    out: dict[int, dict[str, float]] = {}
    for series in vm.export(f'{{__name__=~"meter_.+",meter="{meter}"}}'):
        quantity = series["metric"]["__name__"].removeprefix("meter_")
        for ts, value in zip(series["timestamps"], series["values"], strict=True):
            out.setdefault(ts, {})[quantity] = value
    return out


def mbpoll_snapshot(port: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for address, names in MBPOLL_READS:
        values.update(
            zip(names, read_floats("127.0.0.1", port, METERS["main"], address, len(names)), strict=True)
        )
    return values


class Stack(TypedDict):
    """The running chain: the collector's API, the simulator's Modbus port, every process by name."""

    api: str
    modbus_port: int
    procs: dict[str, Process]
    tmp: Path


@pytest.fixture
def stack(tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> Iterator[Stack]:
    modbus_port, api_port = free_port(), free_port()
    agent_cfg = {
        "site": SITE,
        "gateway": GATEWAY,
        "poll_interval_s": 1,
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
        # All parts share this machine's clock; CI machines often report it unsynchronised.
        "clock": {"mode": "synced"},
        "buses": [
            {
                "name": "sim",
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "meters": [{"id": m, "profile": "eastron-sdm630", "unit": u} for m, u in METERS.items()],
            }
        ],
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(agent_cfg))
    write_collector_config(
        tmp_path / "collector.yaml", mosquitto, ledger=tmp_path / "ledger.db", api_port=api_port,
        tsdb_url=victoria.url, client_id="e2e-collector",
    )  # fmt: skip
    sub = subscription(Channel.READINGS)
    procs = {
        "sim": Process(
            "sim",
            kilowatch(
                "sim",
                "serve",
                "--profile",
                "eastron-sdm630",
                "--units",
                "1-3",
                "--tcp",
                f"127.0.0.1:{modbus_port}",
                "--update-interval",
                str(UPDATE_S),
            ),
            tmp_path / "sim.log",
        ),
        # The real mosquitto_sub records what the agent puts on the wire, to check it against the schema.
        "wire": Process(
            "wire",
            [
                require_binary("mosquitto_sub"),
                "-h",
                mosquitto.host,
                "-p",
                str(mosquitto.port),
                "-q",
                "1",
                "-t",
                sub,
                "-C",
                "5",
            ],
            tmp_path / "wire.jsonl",
        ),
        "collector": Process(
            "collector",
            kilowatch("collector", "run", "--config", str(tmp_path / "collector.yaml")),
            tmp_path / "collector.log",
        ),
    }
    procs["sim"].start()
    wait_until(lambda: "serving" in procs["sim"].log(), 30, "the simulator to listen")
    procs["wire"].start()
    procs["collector"].start()
    api = f"http://127.0.0.1:{api_port}"
    wait_until(lambda: get(f"{api}/healthz")["status"] == "ok", 30, "the collector to connect")
    procs["agent"] = Process(
        "agent", kilowatch("agent", "run", "--config", str(tmp_path / "agent.yaml")), tmp_path / "agent.log"
    ).start()
    yield {"api": api, "modbus_port": modbus_port, "procs": procs, "tmp": tmp_path}
    for name in ("agent", "collector", "wire", "sim"):
        procs[name].stop()


def test_meter_to_api_end_to_end(stack: Stack, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    api, procs = stack["api"], stack["procs"]
    key = api_key(stack["tmp"] / "ledger.db")
    meters = wait_until(
        lambda: len(m := get_json(f"{api}/api/v1/meters", 5, key=key)) == len(METERS) and m,
        60,
        "readings from all three meters",
    )
    assert {(m["id"], m["site"], m["gateway"], m["profile"]) for m in meters} == {
        (name, SITE, GATEWAY, "eastron-sdm630") for name in METERS
    }

    # 1. A third-party Modbus master and our agent see the same meter: some stored point equals mbpoll's
    #    reading of the same update window (mbpoll prints 6 significant digits).
    def matched() -> int | None:
        try:
            seen = mbpoll_snapshot(stack["modbus_port"])
        except MbpollError:
            return None
        for ts, stored in samples_by_ts(victoria, "main").items():
            if all(
                math.isclose(stored.get(q, math.nan), v, rel_tol=MBPOLL_REL, abs_tol=1e-4)
                for q, v in seen.items()
            ):
                return ts
        return None

    wait_until(matched, 45, "a VictoriaMetrics point equal to what mbpoll reads", interval=1.0)

    # 2. The API's latest reading is stored in VictoriaMetrics with the same values.
    latest = get_json(f"{api}/api/v1/meters/main/latest", 5, key=key)
    assert latest["quality"] == "good"
    assert latest["clock"] == "synced"
    ts_ms = int(datetime.fromisoformat(latest["ts"]).timestamp() * 1000)
    stored = wait_until(lambda: samples_by_ts(victoria, "main").get(ts_ms), 15, "the latest point in VM")
    assert stored.keys() == latest["values"].keys()
    for q, v in latest["values"].items():
        assert math.isclose(stored[q], v, rel_tol=1e-12), q
    assert latest["values"]["active_power_w"] == pytest.approx(
        sum(latest["values"][f"active_power_l{p}_w"] for p in (1, 2, 3)), rel=1e-4
    )

    # 3. Interval energy in the ledger adds up to the counter's movement stored in VictoriaMetrics.
    def counter_moved() -> list[float] | None:
        samples = samples_by_ts(victoria, "main")
        energy = [samples[t]["energy_import_kwh"] for t in sorted(samples)]
        return energy if energy[-1] > energy[0] else None

    # The simulated counter integrates power; at float32 (2 Wh steps near 30 MWh) that shows within a minute.
    energy = wait_until(counter_moved, 90, "the energy counter to move", interval=1.0)
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    query = urllib.parse.urlencode(window)
    intervals = get_json(f"{api}/api/v1/meters/main/intervals?{query}", 5, key=key)["intervals"]
    total = sum(i["energy_import_kwh"] or 0 for i in intervals)
    # The ledger may hold a newer reading than the export taken just before; bound it both ways.
    latest_energy = get_json(f"{api}/api/v1/meters/main/latest", 5, key=key)["values"]["energy_import_kwh"]
    assert energy[-1] - energy[0] - 1e-6 <= total <= latest_energy - energy[0] + 1e-6

    # 4. What the agent put on the wire passes the published JSON Schema (the agent's side of the contract).
    schema = json.loads((DOCS / "mqtt" / "readings-batch.schema.json").read_text())
    wait_until(lambda: not procs["wire"].alive(), 30, "mosquitto_sub to record 5 batches")
    wire = [json.loads(line) for line in procs["wire"].log().splitlines()]
    assert len(wire) == 5
    for doc in wire:
        jsonschema.validate(doc, schema)
        assert ReadingsBatch.model_validate(doc).gateway == GATEWAY
    assert [d["seq"] for d in wire] == list(range(wire[0]["seq"], wire[0]["seq"] + 5))

    # 5. Malformed payloads from the real mosquitto_pub are rejected and counted; valid readings keep flowing.
    readings_topic = topic(SITE, GATEWAY, Channel.READINGS)
    mosquitto.publish(readings_topic, b"\x00\xffnot json")
    mosquitto.publish(readings_topic, json.dumps({**wire[0], "schema_version": 99}))
    mosquitto.publish(topic(SITE, "other-gw", Channel.READINGS), json.dumps(wire[0]))

    def rejected_once(reason: str) -> bool:
        return f'kilowatch_collector_rejected_messages_total{{reason="{reason}"}} 1.0' in metrics_text(api)

    for reason in ("invalid_json", "unsupported_schema_version", "topic_mismatch"):
        wait_until(partial(rejected_once, reason), 15, f"the collector to count a {reason} rejection")
    after = get_json(f"{api}/api/v1/meters/main/latest", 5, key=key)["ts"]
    wait_until(
        lambda: get_json(f"{api}/api/v1/meters/main/latest", 5, key=key)["ts"] > after,
        15,
        "valid readings to keep flowing",
    )

    # 6. Every part stops cleanly on SIGTERM.
    for name in ("agent", "collector", "sim"):
        assert procs[name].stop() == 0, f"{name} did not exit 0:\n{procs[name].log()[-2000:]}"
