"""Ingest benchmark: readings per second end to end, MQTT publisher -> Mosquitto -> collector -> SQLite + VM.

Run from the repository root: ``.venv/bin/python bench/ingest.py [--batches 500] [--meters 32]``.

It starts its own Mosquitto, VictoriaMetrics and `kilowatch collector run` on free loopback ports, then
publishes SDM630-shaped readings batches (every quantity of the profile, one batch = one poll cycle of all
meters) with QoS 1. The baseline, measured in the same run with the same payloads, is a bare aiomqtt
subscriber that only counts messages: the difference is what validation, the ledger and the TSDB cost.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiomqtt

from app.processes import (
    UNBOUNDED_QUEUE,
    Mosquitto,
    Process,
    VictoriaMetrics,
    free_port,
    wait_until,
    write_collector_config,
)
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    Channel,
    ClockState,
    Quality,
    Reading,
    ReadingsBatch,
    topic,
)
from kilowatch.profiles import load_builtin

SITE, GATEWAY = "bench-site", "gw-bench"
# Room for a whole backlog (UNBOUNDED_QUEUE) and a wide in-flight window.
BASELINE_TOPIC = "bench-baseline/readings"  # outside the collector's subscription
BROKER_CONF = f"{UNBOUNDED_QUEUE}\nmax_inflight_messages 100\n"


def payloads(batches: int, meters: int) -> list[bytes]:
    quantities = [r.quantity for r in load_builtin("eastron-sdm630").registers]
    start_ms = int(time.time() * 1000) - batches * 1000
    out = []
    for b in range(batches):
        ts = start_ms + b * 1000
        readings = [
            Reading(
                meter=f"m{m:03d}",
                profile="eastron-sdm630",
                ts=ts,
                values={q: 230.0 + (b * 7 + m * 13 + i) % 97 / 10 for i, q in enumerate(quantities)}
                | {"energy_import_kwh": 1000.0 + b * 0.01 + m},
                quality=Quality.GOOD,
                clock=ClockState.SYNCED,
            )
            for m in range(meters)
        ]
        batch = ReadingsBatch(
            schema_version=SCHEMA_VERSION,
            site=SITE,
            gateway=GATEWAY,
            seq=b,
            spool_id="be0c0001",
            sent_at=ts,
            readings=readings,
        )
        out.append(batch.model_dump_json().encode())
    return out


async def publish_all(broker: Mosquitto, messages: list[bytes], name: str) -> None:
    """Publish with QoS 1, keeping at most 100 unacknowledged messages in flight, like a draining gateway."""
    window = asyncio.Semaphore(100)

    async def one(client: aiomqtt.Client, payload: bytes) -> None:
        async with window:
            await client.publish(name, payload, qos=1)

    async with aiomqtt.Client(
        broker.host, broker.port, identifier="bench-publisher", max_inflight_messages=100
    ) as client:
        await asyncio.gather(*(one(client, m) for m in messages))


async def baseline(broker: Mosquitto, messages: list[bytes]) -> float:
    """Seconds for a subscriber that does nothing but count to receive every message."""

    async def count(sub: aiomqtt.Client) -> None:
        received = 0
        async for _ in sub.messages:
            received += 1
            if received == len(messages):
                return

    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-baseline") as sub:
        await sub.subscribe(BASELINE_TOPIC, qos=1)
        started = time.perf_counter()
        await asyncio.gather(publish_all(broker, messages, BASELINE_TOPIC), count(sub))
        return time.perf_counter() - started


def metric(api: str, name: str) -> float:
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def through_collector(
    broker: Mosquitto, api: str, messages: list[bytes], readings: int
) -> tuple[float, float]:
    """Seconds until the ledger, and until the TSDB, hold every reading."""
    started = time.perf_counter()
    await publish_all(broker, messages, topic(SITE, GATEWAY, Channel.READINGS))
    ledger_s = tsdb_s = None
    while ledger_s is None or tsdb_s is None:
        now = time.perf_counter() - started
        if ledger_s is None and metric(api, "kilowatch_collector_readings_accepted_total") >= readings:
            ledger_s = now
        if tsdb_s is None and metric(api, "kilowatch_collector_tsdb_points_written_total") >= readings:
            tsdb_s = now
        if now > 600:
            raise TimeoutError(f"after 600 s: ledger {ledger_s}, tsdb {tsdb_s}")
        await asyncio.sleep(0.05)
    return ledger_s, tsdb_s


def main() -> None:
    # aiomqtt warns about every publish beyond ten awaiting their acknowledgement; a window of 100 is the point.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500, help="batches to publish (default 500)")
    parser.add_argument("--meters", type=int, default=32, help="readings per batch (default 32)")
    args = parser.parse_args()
    messages = payloads(args.batches, args.meters)
    readings = args.batches * args.meters
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto.start(work / "mosquitto", extra_conf=BROKER_CONF)
        vm = VictoriaMetrics.start(work / "vm")
        api_port = free_port()
        write_collector_config(
            work / "collector.yaml", broker, ledger=work / "ledger.db", api_port=api_port, tsdb_url=vm.url,
            client_id="bench-collector",
        )  # fmt: skip
        collector = Process(
            "collector",
            [sys.executable, "-m", "app", "collector", "run", "--config", str(work / "collector.yaml"),
             "--log-level", "WARNING"],
            work / "collector.log",
        ).start()  # fmt: skip
        api = f"http://127.0.0.1:{api_port}"
        try:
            wait_until(lambda: metric(api, "kilowatch_collector_mqtt_connected") == 1.0, 30, "the collector")
            base_s = asyncio.run(baseline(broker, messages))
            ledger_s, tsdb_s = asyncio.run(through_collector(broker, api, messages, readings))
        finally:
            collector.stop()
            vm.stop()
            broker.stop()
    size = sum(map(len, messages)) / len(messages)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"payload: {args.batches} batches x {args.meters} readings x 31 quantities; "
          f"{size:,.0f} bytes per batch, {size / args.meters:,.0f} bytes per reading")  # fmt: skip
    print(f"{'path':<46}{'seconds':>9}{'readings/s':>13}")
    rows = [
        ("baseline: Mosquitto -> counting subscriber", base_s),
        ("collector: Mosquitto -> validated -> SQLite", ledger_s),
        ("collector: ... -> VictoriaMetrics (v2 write)", tsdb_s),
    ]
    for name, seconds in rows:
        print(f"{name:<46}{seconds:>9.2f}{readings / seconds:>13,.0f}")


if __name__ == "__main__":
    main()
