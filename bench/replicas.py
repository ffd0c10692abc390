"""Replicas benchmark: one collector against two replicas (``mqtt.share_group``) writing one PostgreSQL ledger.

Run from the repository root: ``.venv/bin/python bench/replicas.py [--batches 2000] [--gateways 8]
[--meters 32] [--quantities 20]``, or as part of ``bench/ingest.py --replicas`` (the same messages as its live
run, spread over 8 gateways).

It starts its own PostgreSQL and Mosquitto, and publishes the same readings batches (bench/ingest.py's
payloads, spread over ``--gateways`` gateways of ``--meters`` meters each, interleaved as many gateways send
them) first to one collector, then to two replicas sharing the subscription, each on a fresh database. Both
set-ups run with a share group, so the only difference is the number of processes. For each: seconds from
the first publish to the last batch in the ledger, readings/s, the collectors' CPU-seconds (and readings
per collector CPU-second), and the PostgreSQL server's CPU-seconds meanwhile. Everything (publisher, broker,
server, collectors) shares this machine's cores, so readings/s of two replicas is bounded by what is left
of them; the figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import psycopg
import yaml

from app.processes import Mosquitto, PostgreSQL, Process, free_port, wait_until, write_collector_config
from bench.agent_bus import cpu_seconds
from bench.ingest import BROKER_CONF, HEADER, POLL_S, Measured, metric, payloads, quantities
from collector.store import LedgerReader, Postgres
from kilowatch.mqtt_contract import Channel, topic

SITE = "bench-site"
GATEWAYS = 8


def spread(messages: list[bytes], gateways: int) -> list[tuple[str, bytes]]:
    """`messages` as sent by `gateways` gateways: batch i from gateway i % gateways, with its own seq and
    meters, interleaved."""
    out = []
    for i, message in enumerate(messages):
        batch = json.loads(message)
        gateway = f"gw-{i % gateways:02d}"
        batch.update(site=SITE, gateway=gateway, seq=i // gateways)
        for reading in batch["readings"]:
            reading["meter"] = f"{gateway}-{reading['meter']}"
        out.append((topic(SITE, gateway, Channel.READINGS), json.dumps(batch).encode()))
    return out


async def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    """QoS 1, at most 100 unacknowledged in flight."""
    window = asyncio.Semaphore(100)

    async def one(client: aiomqtt.Client, name: str, payload: bytes) -> None:
        async with window:
            await client.publish(name, payload, qos=1)

    async with aiomqtt.Client(
        broker.host, broker.port, identifier="bench-replicas-publisher", max_inflight_messages=100
    ) as client:
        await asyncio.gather(*(one(client, name, payload) for name, payload in messages))


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (a PostgreSQL server's backends)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    found, frontier = [pid], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def connected(api: str) -> bool:
    return metric(api, "kilowatch_collector_mqtt_connected") == 1.0


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_seconds(pid)
        except OSError:  # ended meanwhile
            continue
    return out


def run(work: Path, server: PostgreSQL, broker: Mosquitto, replicas: int, messages: list[tuple[str, bytes]],
        readings: int) -> tuple[Measured, float]:  # fmt: skip
    """`replicas` collectors taking `messages`; (their figures, the server's CPU-seconds meanwhile)."""
    database = f"replicas_{replicas}"
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    ledger = server.url(database)
    group = secrets.token_hex(16)
    collectors = []
    for n in range(replicas):
        port = free_port()
        config = write_collector_config(
            work / f"{database}-{n}.yaml", broker, ledger=ledger, api_port=port, tsdb_url=None,
            client_id=f"bench-{database}-{n}",
        )  # fmt: skip
        settings = yaml.safe_load(config.read_text())
        settings["mqtt"]["share_group"] = group
        config.write_text(yaml.safe_dump(settings))
        args = [sys.executable, "-m", "app", "collector", "run", "--config", str(config), "--log-level", "WARNING"]  # fmt: skip
        collectors.append(
            (Process(database, args, work / f"{database}-{n}.log").start(), f"http://127.0.0.1:{port}")
        )
    try:
        for process, api in collectors:
            try:
                wait_until(functools.partial(connected, api), 60, "a replica")
            except TimeoutError as exc:
                raise RuntimeError(f"a replica did not subscribe:\n{process.log()[-3000:]}") from exc
        pids = [p.proc.pid for p, _ in collectors if p.proc is not None]
        assert server.process.proc is not None
        server_pids = descendants(server.process.proc.pid)
        cpu0, server0, started = cpu_of(pids), cpu_of(server_pids), time.perf_counter()
        asyncio.run(publish(broker, messages))
        with LedgerReader(Postgres(ledger)) as reader:
            while (stored := reader.stored_batches()) < len(messages):
                if time.perf_counter() - started > 900:
                    raise TimeoutError(f"after 900 s the ledger holds {stored} of {len(messages)} batches")
                time.sleep(POLL_S)
        seconds = time.perf_counter() - started
        cpu = sum(cpu_of(pids).values()) - sum(cpu0.values())
        server1 = cpu_of(descendants(server.process.proc.pid))
        server_cpu = sum(v - server0.get(pid, 0.0) for pid, v in server1.items())
    finally:
        for process, _ in collectors:
            process.stop()
    name = "1 collector" if replicas == 1 else f"{replicas} replicas"
    return Measured(f"{name}, PostgreSQL", readings, seconds, cpu), server_cpu


def compare(batches: int, gateways: int, meters: int, names: list[str]) -> None:
    """One collector, then two replicas, taking the same messages; their figures printed."""
    messages = spread(payloads(batches, meters, names), gateways)
    readings = batches * meters
    rows: list[tuple[Measured, float]] = []
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-") as tmp:
        work = Path(tmp)
        server = PostgreSQL.start(work / "postgresql")
        broker = Mosquitto.start(work / "mosquitto", extra_conf=BROKER_CONF)
        try:
            for replicas in (1, 2):
                rows.append(run(work, server, broker, replicas, messages, readings))
        finally:
            broker.stop()
            server.remove()
    print(f"replicas: {batches} batches from {gateways} gateways x {meters} readings x {len(names)} quantities;"
          f" {os.cpu_count()} cores shared by all")  # fmt: skip
    print(f"{HEADER}{'server CPU s':>14}")
    for measured, server_cpu in rows:
        print(f"{measured.row()}{server_cpu:>14.2f}")
    (one, _), (two, _) = rows
    print(f"2 replicas / 1 collector: {(two.readings / two.seconds) / (one.readings / one.seconds):.2f}x readings/s, "
          f"{(two.readings / two.cpu_s) / (one.readings / one.cpu_s):.2f}x readings per collector CPU-second")  # fmt: skip


def main() -> None:
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000, help="batches to publish (default 2000)")
    parser.add_argument(
        "--gateways", type=int, default=GATEWAYS, help=f"gateways sending them (default {GATEWAYS})"
    )
    parser.add_argument("--meters", type=int, default=32, help="readings per batch (default 32)")
    parser.add_argument("--quantities", type=int, default=20, help="quantities per reading (default 20)")
    args = parser.parse_args()
    compare(args.batches, args.gateways, args.meters, quantities(args.quantities))


if __name__ == "__main__":
    main()
