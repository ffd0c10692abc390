"""Ingest benchmark: readings per second and per CPU-second, MQTT publisher -> Mosquitto -> a consumer -> SQLite.

Run from the repository root: ``.venv/bin/python bench/ingest.py [--batches 2000] [--meters 32]
[--quantities 20] [--tsdb] [--backlog 400000 [--backlog-reference 20000]] [--replicas]``.

It starts its own Mosquitto (and VictoriaMetrics with ``--tsdb``) on free loopback ports and publishes
SDM630-shaped readings batches (``--quantities`` of the profile's quantities, plausible values, one batch =
one poll cycle of all meters) with QoS 1, the same payloads to each consumer in turn, each a child process
of its own whose CPU time (user + system, from /proc) is measured while it takes them:

- the collector: ``kilowatch collector run`` (validation, trust checks, dedup, intervals, the ledger in
  SQLite with WAL and ``synchronous=FULL``, acknowledgement after commit; the TSDB outbox with ``--tsdb``);
- naive: an aiomqtt subscriber that parses each message with ``json.loads`` and inserts its readings one by
  one into SQLite, committing once per message (default journal; acknowledged on arrival by aiomqtt);
- tuned-naive: the same, with WAL and ``synchronous=FULL``, every message that has arrived (up to 100) in one
  ``executemany`` and one commit.

The naive subscribers check nothing (no schema, no ranges, no dedup beyond the primary key, no intervals)
and acknowledge before storing: they are what the collector's guarantees cost against. Readings per
CPU-second is the figure to trust on a shared machine; readings/s also depends on what else runs.

``--backlog N``: the collector's persistent session is made, the collector stopped, N readings queued at the
broker for it and the collector started again; how fast it drains them (from its first commit to its last,
from the ledger's batch receipt times) and at what CPU cost, beside a reference backlog
(``--backlog-reference``, default 20,000) drained the same way in the same run, with the reconnections
its log shows and ``kilowatch_collector_readings_stored_total`` against what the ledger holds.
``--replicas``: then the same messages, spread over 8 gateways, to one collector and to two replicas on one
PostgreSQL ledger (see bench/replicas.py).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sqlite3
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
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
from bench.agent_bus import cpu_seconds
from collector.store import LedgerReader
from kilowatch.mqtt_contract import SCHEMA_VERSION, Channel, topic
from kilowatch.profiles import load_builtin
from kilowatch.quantities import ACTIVE_POWER, ENERGY_IMPORT, QUANTITIES, Kind

SITE, GATEWAY = "bench-site", "gw-bench"
NAIVE_TOPIC = "bench-naive/{kind}/readings"  # outside the collector's subscription
# Room for a whole backlog (UNBOUNDED_QUEUE) and a wide in-flight window.
BROKER_CONF = f"{UNBOUNDED_QUEUE}\nmax_inflight_messages 200\n"  # as deploy/mosquitto.conf
POLL_S = 0.1
STORED = "kilowatch_collector_readings_stored_total"


def quantities(count: int) -> list[str]:
    """The first `count` quantities of the SDM630 profile, always with total power and imported energy."""
    names = [r.quantity for r in load_builtin("eastron-sdm630").registers]
    chosen = [ACTIVE_POWER, ENERGY_IMPORT, *(n for n in names if n not in (ACTIVE_POWER, ENERGY_IMPORT))]
    return chosen[:count]


def payloads(batches: int, meters: int, names: list[str], *, first_seq: int = 0) -> list[bytes]:
    """Readings batches, one second apart, of values each within its quantity's physical range."""
    start_ms = int(time.time() * 1000) - (first_seq + batches) * 1000
    out = []
    for b in range(first_seq, first_seq + batches):
        ts = start_ms + b * 1000
        readings = []
        for m in range(meters):
            values = {}
            for i, name in enumerate(names):
                q = QUANTITIES[name]
                wobble = (b * 7 + m * 13 + i) % 97 / 100
                if q.kind is Kind.COUNTER:
                    values[name] = 1000.0 + m + b * 0.01 + i
                elif q.maximum <= 1.0:
                    values[name] = 0.9 + wobble / 10
                else:
                    values[name] = 230.0 + wobble * 10
            readings.append(
                {"meter": f"m{m:03d}", "profile": "eastron-sdm630", "ts": ts, "values": values,
                 "quality": "good", "clock": "synced"}
            )  # fmt: skip
        batch = {"schema_version": SCHEMA_VERSION, "site": SITE, "gateway": GATEWAY, "seq": b,
                 "spool_id": "be0c0001", "sent_at": ts, "readings": readings}  # fmt: skip
        out.append(json.dumps(batch).encode())
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


def metrics(api: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+)(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)}


def metric(api: str, name: str) -> float:
    return metrics(api).get(name, 0.0)


@dataclass(frozen=True)
class Measured:
    name: str
    readings: int
    seconds: float
    cpu_s: float

    def row(self) -> str:
        per_cpu = self.readings / self.cpu_s if self.cpu_s > 0 else float("inf")
        return (
            f"{self.name:<44}{self.seconds:>8.2f}{self.readings / self.seconds:>12,.0f}"
            f"{self.cpu_s:>8.2f}{per_cpu:>12,.0f}"
        )


HEADER = f"{'consumer':<44}{'seconds':>8}{'readings/s':>12}{'CPU s':>8}{'per CPU-s':>12}"


class Collector:
    """``kilowatch collector run`` as a child process on a ledger of its own."""

    def __init__(self, work: Path, broker: Mosquitto, tsdb_url: str | None) -> None:
        self.work = work
        self.ledger = work / "ledger.db"
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        self.config = write_collector_config(
            work / "collector.yaml", broker, ledger=self.ledger, api_port=port, tsdb_url=tsdb_url,
            client_id="bench-collector",
        )  # fmt: skip
        self.process: Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        assert self.process.proc is not None
        return self.process.proc.pid

    def start(self) -> None:
        self.process = Process(
            "collector",
            [sys.executable, "-m", "app", "collector", "run", "--config", str(self.config),
             "--log-level", "WARNING"],
            self.work / "collector.log",
        ).start()  # fmt: skip

    def wait_connected(self) -> None:
        wait_until(lambda: metric(self.api, "kilowatch_collector_mqtt_connected") == 1.0, 60, "the collector")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def ledger_rows(self) -> int:
        """Readings the ledger holds."""
        with LedgerReader(self.ledger) as reader:
            return sum(reader.count_readings(m.meter_id, 0, 2**62) for m in reader.meters())


async def through_collector(
    broker: Mosquitto, collector: Collector, messages: list[bytes], readings: int, *, tsdb: bool
) -> tuple[Measured, float | None]:
    """The collector taking `messages` live; and the seconds until the TSDB had them all (with a TSDB)."""
    cpu0, started = cpu_seconds(collector.pid), time.perf_counter()
    await publish_all(broker, messages, topic(SITE, GATEWAY, Channel.READINGS))
    with LedgerReader(collector.ledger) as ledger:
        while (stored := ledger.stored_batches()) < len(messages):
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"after 600 s the ledger holds {stored} of {len(messages)} batches")
            await asyncio.sleep(POLL_S)
    seconds, cpu = time.perf_counter() - started, cpu_seconds(collector.pid) - cpu0
    # The metric is counted right after the commit, which the ledger shows a moment earlier.
    await asyncio.to_thread(
        wait_until, lambda: metric(collector.api, STORED) == readings, 10, "the stored metric"
    )
    name = "collector: checked, deduplicated, SQLite" + (" + outbox" if tsdb else "")
    if not tsdb:
        return Measured(name, readings, seconds, cpu), None
    while metric(collector.api, "kilowatch_collector_tsdb_points_written_total") < readings:
        if time.perf_counter() - started > 600:
            raise TimeoutError("the TSDB did not get every point in 600 s")
        await asyncio.sleep(POLL_S)
    return Measured(name, readings, seconds, cpu), time.perf_counter() - started


async def through_subscriber(
    broker: Mosquitto, work: Path, kind: str, messages: list[bytes], readings: int
) -> Measured:
    """A naive subscriber (`kind` naive or tuned) as a child process taking `messages` live."""
    name = NAIVE_TOPIC.format(kind=kind)
    process = Process(
        kind,
        [sys.executable, "-m", "bench.ingest", "--subscriber", kind, "--broker", f"{broker.host}:{broker.port}",
         "--topic", name, "--db", str(work / f"{kind}.db"), "--expect", str(readings)],
        work / f"{kind}.log",
    ).start()  # fmt: skip
    try:
        await asyncio.to_thread(wait_until, lambda: "ready" in process.log(), 30, f"the {kind} subscriber")
        assert process.proc is not None
        cpu0, started = cpu_seconds(process.proc.pid), time.perf_counter()
        await publish_all(broker, messages, name)
        while "done" not in process.log():
            if not process.alive():
                raise RuntimeError(f"the {kind} subscriber died:\n{process.log()}")
            await asyncio.sleep(POLL_S)
        seconds, cpu = time.perf_counter() - started, cpu_seconds(process.proc.pid) - cpu0
    finally:
        process.stop()
    label = {
        "naive": "naive: json.loads, INSERT + commit per message",
        "tuned": "tuned-naive: executemany, WAL",
    }
    return Measured(label[kind], readings, seconds, cpu)


async def subscribe_and_store(args: argparse.Namespace) -> None:
    """The naive subscribers (run as ``--subscriber naive|tuned`` by the benchmark itself)."""
    tuned = args.subscriber == "tuned"
    db = sqlite3.connect(args.db, isolation_level=None)
    if tuned:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    db.execute('CREATE TABLE readings (meter TEXT, ts INTEGER, "values" TEXT, PRIMARY KEY (meter, ts))')
    insert = "INSERT OR IGNORE INTO readings VALUES (?, ?, ?)"
    host, port = args.broker.rsplit(":", 1)
    stored = 0
    async with aiomqtt.Client(host, int(port), identifier=f"bench-{args.subscriber}") as client:
        await client.subscribe(args.topic, qos=1)
        print("ready", flush=True)
        messages = client.messages
        while stored < args.expect:
            group = [await anext(messages)]
            while tuned and len(group) < 100 and len(messages):
                group.append(await anext(messages))
            db.execute("BEGIN")
            rows = [
                (r["meter"], r["ts"], json.dumps(r["values"]))
                for m in group
                for r in json.loads(m.payload)["readings"]
            ]
            if tuned:
                db.executemany(insert, rows)
            else:
                for row in rows:
                    db.execute(insert, row)
            db.execute("COMMIT")
            stored += len(rows)
        print("done", flush=True)
        await asyncio.sleep(3600)  # measured while alive; the benchmark stops it


@dataclass(frozen=True)
class Drained:
    """How the collector drained a backlog queued for its session."""

    readings: int
    rate: float
    """Readings per second from its first commit to its last (the ledger's batch receipt times)."""
    per_cpu_s: float
    """Readings per CPU-second from the first commit seen to the end."""
    to_first_s: float
    """From the collector's start to its first commit (start-up and session set-up)."""
    reconnects: int
    """Times its log says it lost the broker and retried."""
    stored_metric: float
    ledger_rows: int

    def row(self, name: str) -> str:
        return (
            f"{name:<22}{self.readings:>10,}{self.rate:>12,.0f}{self.per_cpu_s:>12,.0f}{self.to_first_s:>9.2f}"
            f"{self.reconnects:>8}{self.stored_metric:>12,.0f}{self.ledger_rows:>12,}"
        )


DRAIN_HEADER = (
    f"{'backlog':<22}{'readings':>10}{'readings/s':>12}{'per CPU-s':>12}{'start s':>9}{'reconn':>8}"
    f"{'metric':>12}{'ledger':>12}"
)


def drain(work: Path, readings: int, meters: int, names: list[str]) -> Drained:
    """Queue `readings` for the collector's session while it is stopped, start it and time the drain."""
    work.mkdir()
    broker = Mosquitto.start(work / "mosquitto", extra_conf=BROKER_CONF)
    collector = Collector(work, broker, None)
    try:
        collector.start()
        collector.wait_connected()  # the session and its subscriptions exist at the broker
        collector.stop()
        batches = -(-readings // meters)
        messages = payloads(batches, meters, names)
        asyncio.run(publish_all(broker, messages, topic(SITE, GATEWAY, Channel.READINGS)))
        del messages
        total = batches * meters
        started_ms = time.time_ns() // 1_000_000
        collector.start()
        first: tuple[float, int] | None = None  # (CPU seconds, batches stored) when the first showed
        wait_until(collector.ledger.exists, 60, "the ledger")
        with LedgerReader(collector.ledger) as ledger:
            while (stored := ledger.stored_batches()) < batches:
                if stored > 0 and first is None:
                    first = (cpu_seconds(collector.pid), stored)
                if time.time_ns() // 1_000_000 - started_ms > 1_800_000:
                    raise TimeoutError(f"the backlog did not drain in 1800 s: {stored} of {batches} batches")
                time.sleep(POLL_S)
        cpu_s = cpu_seconds(collector.pid)
        if first is None:  # drained between two polls: the whole process, start-up included
            first = (0.0, 0)
        with sqlite3.connect(f"{collector.ledger.absolute().as_uri()}?mode=ro", uri=True) as db:
            first_ms, last_ms = db.execute(
                "SELECT min(received_at), max(received_at) FROM batches"
            ).fetchone()
            (first_group,) = db.execute(
                "SELECT sum(readings) FROM batches WHERE received_at = ?", (first_ms,)
            ).fetchone()
        assert collector.process is not None
        return Drained(
            readings=total,
            rate=(total - first_group) / max((last_ms - first_ms) / 1000, 1e-3),
            per_cpu_s=(batches - first[1]) * meters / (cpu_s - first[0]),
            to_first_s=(first_ms - started_ms) / 1000,
            reconnects=collector.process.log().count("unavailable"),
            stored_metric=metric(collector.api, STORED),
            ledger_rows=collector.ledger_rows(),
        )
    finally:
        collector.stop()
        broker.stop()


def live(args: argparse.Namespace, names: list[str]) -> None:
    """Every consumer in turn taking the same messages live."""
    messages = payloads(args.batches, args.meters, names)
    readings = args.batches * args.meters
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto.start(work / "mosquitto", extra_conf=BROKER_CONF)
        vm = VictoriaMetrics.start(work / "vm") if args.tsdb else None
        collector = Collector(work, broker, vm.url if vm else None)
        try:
            collector.start()
            collector.wait_connected()
            measured, tsdb_s = asyncio.run(
                through_collector(broker, collector, messages, readings, tsdb=args.tsdb)
            )
            collector.stop()
            rows = [measured]
            for kind in ("naive", "tuned"):
                rows.append(asyncio.run(through_subscriber(broker, work, kind, messages, readings)))
        finally:
            collector.stop()
            if vm is not None:
                vm.stop()
            broker.stop()
    size = sum(map(len, messages)) / len(messages)
    print(f"payload: {args.batches} batches x {args.meters} readings x {len(names)} quantities; "
          f"{size:,.0f} bytes per batch, {size / args.meters:,.0f} bytes per reading")  # fmt: skip
    print(HEADER)
    for row in rows:
        print(row.row())
    if tsdb_s is not None:
        print(
            f"{'collector: ... -> VictoriaMetrics (v2 write)':<44}{tsdb_s:>8.2f}{readings / tsdb_s:>12,.0f}"
        )


def backlog(args: argparse.Namespace, names: list[str]) -> None:
    """The reference backlog and the large one, drained one after the other."""
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-") as tmp:
        small = drain(Path(tmp) / "small", args.backlog_reference, args.meters, names)
        large = drain(Path(tmp) / "large", args.backlog, args.meters, names)
    print(DRAIN_HEADER)
    print(small.row("reference"))
    print(large.row("large"))
    print(f"large / reference: {large.rate / small.rate:.0%} of the drain rate, "
          f"{large.per_cpu_s / small.per_cpu_s:.0%} of the readings per CPU-second")  # fmt: skip


def main() -> None:
    # aiomqtt warns about every publish beyond ten awaiting their acknowledgement; a window of 100 is the point.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000, help="batches to publish (default 2000)")
    parser.add_argument("--meters", type=int, default=32, help="readings per batch (default 32)")
    parser.add_argument("--quantities", type=int, default=20, help="quantities per reading (default 20)")
    parser.add_argument("--tsdb", action="store_true", help="the collector also writes to VictoriaMetrics")
    parser.add_argument("--backlog", type=int, help="readings to queue for the collector and drain")
    parser.add_argument(
        "--replicas", action="store_true", help="then one collector against two replicas on PostgreSQL"
    )
    parser.add_argument(
        "--backlog-reference", type=int, default=20_000, help="the backlog to compare with (default 20000)"
    )
    hidden = argparse.SUPPRESS  # how the benchmark starts its naive subscribers
    parser.add_argument("--subscriber", choices=["naive", "tuned"], help=hidden)
    for option in ("--broker", "--topic", "--db"):
        parser.add_argument(option, help=hidden)
    parser.add_argument("--expect", type=int, help=hidden)
    args = parser.parse_args()
    if args.subscriber:
        asyncio.run(subscribe_and_store(args))
        return
    names = quantities(args.quantities)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if args.backlog:
        backlog(args, names)
    else:
        live(args, names)
    if args.replicas:
        from bench.replicas import GATEWAYS, compare  # imported here: it builds on this module

        compare(args.batches, GATEWAYS, args.meters, names)


if __name__ == "__main__":
    main()
