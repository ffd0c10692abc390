"""Spool benchmark: durable appends to the agent's SQLite spool, and draining a week's backlog end to end.

Run from the repository root: ``.venv/bin/python bench/spool.py [--days 7] [--quick] [--no-tsdb]``.

Every figure is printed beside a baseline measured in the same run, never asserted:

1. durable append throughput of :class:`agent.spool.Spool` (WAL, ``synchronous=FULL``: every commit syncs
   the disk), batches of 32 SDM630-like readings (the 11 quantities of bench/agent_bus.py), readings/s
   appended AND committed:
   - committing every N batches, for several N (N = 1 is the worst case: one fsync per batch; N = 63 is
     what :data:`agent.spool.COMMIT_READINGS` makes under load);
   - as the publisher runs it: a producer appending as fast as it can while a commit task waits for
     :meth:`Spool.wait_due` and flushes (the default ``commit_interval_s`` of 1 s, sooner at 2,000 readings);
   baseline: plain ``sqlite3`` inserting the same JSON payloads, already serialised, into the same table
   with the same pragmas, one transaction per commit, so the spool's own overhead (serialising the
   readings, its locks, its bookkeeping) shows; and the cost of the serialisation alone. Goal >= 20,000
   readings/s.
2. draining a backlog of ``--days`` days (default 7) of 32 meters polled every 10 s (32 x 8,640 readings a
   day, in batches of 32) from a spool file pre-filled with the Spool class, by a real ``kilowatch agent
   run`` child process, through a real Mosquitto into a real ``kilowatch collector run`` child process:
   wall time from the agent's start until the collector's ledger holds every reading (an exact count with
   a read-only sqlite3 connection at the end), readings/s (goal >= 10,000), and each process's peak RSS
   (VmHWM) and CPU seconds from the agent's start. Once without a TSDB, once with VictoriaMetrics (the TSDB path goes through the
   ledger's outbox; its time until VictoriaMetrics has every point is shown too). Baseline: a bare aiomqtt
   client that publishes the same batches, read straight from the spool file, through the same broker
   to a subscriber that only counts them (what the broker and MQTT cost on this machine).
   The agent polls one meter ``live-01`` on a closed loopback port (every 10 s, its readings carry
   quality error); its live batches are counted apart from the backlog. Mosquitto is set up as
   deploy/mosquitto.conf (max_inflight_messages 200, no byte limit) with max_queued_messages above the
   whole backlog, so nothing can be dropped, and without persistence.

``--quick`` is ``--days 1`` with fewer append batches. The machine's other load makes figures noisy: run
it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.processes import Mosquitto, Process, VictoriaMetrics, free_port, wait_until, write_collector_config
from bench.agent_bus import CORE_QUANTITIES, cpu_seconds, rss_mb

if TYPE_CHECKING:
    from agent.spool import Spool
    from kilowatch.mqtt_contract import Reading

METERS = 32
INTERVAL_MS = 10_000
PER_DAY = 86_400_000 // INTERVAL_MS
PROFILE = "eastron-sdm630"
SITE, GATEWAY = "bench-site", "gw-spool"
LIVE_METER = "live-01"
BOOT_ID = "be0c0000-0000-4000-8000-000000000001"
"""A boot id of the contract's form (the pre-filled spool's readings count mono_ms from it)."""
BIG_SPOOL = 64 * 2**30
"""Spool size bound for the drain: a week of 32 meters must not be evicted."""
BASELINE_TOPIC = "bench-baseline/readings"
DRAIN_TIMEOUT_S = 3600.0
MB = 2**20


def meter_id(index: int) -> str:
    return f"m{index + 1:02d}"


def batch(n: int, start_ms: int) -> list[Reading]:
    """Poll cycle `n` of the 32 meters: SDM630-like values, energy counters rising."""
    from kilowatch.mqtt_contract import ClockState, Quality, Reading

    ts = start_ms + n * INTERVAL_MS
    out = []
    for m in range(METERS):
        wobble = (n * 7 + m * 13) % 97 / 10
        values = {
            "voltage_l1_v": 229.0 + wobble,
            "voltage_l2_v": 230.0 + wobble,
            "voltage_l3_v": 231.0 - wobble,
            "current_l1_a": 10.0 + wobble,
            "current_l2_a": 11.0 + wobble,
            "current_l3_a": 9.0 + wobble,
            "active_power_w": 6900.0 + wobble * 100,
            "power_factor": 0.95,
            "frequency_hz": 50.0 + wobble / 100,
            "energy_import_kwh": 1000.0 * (m + 1) + n * 0.0192,
            "energy_export_kwh": 0.5 * m,
        }
        out.append(
            Reading(
                meter=meter_id(m),
                profile=PROFILE,
                ts=ts,
                values=values,
                quality=Quality.GOOD,
                clock=ClockState.SYNCED,
                mono_ms=ts % 10**9,
            )
        )
    return out


# --- 1: durable appends ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendRow:
    name: str
    readings: int
    seconds: float
    commits: int


def open_spool(path: Path, **settings: int) -> Spool:
    from agent.config import SpoolSettings
    from agent.spool import Spool

    return Spool(SpoolSettings(path=path, **settings), boot_id=BOOT_ID)


async def spool_every(path: Path, batches: list[list[Reading]], every: int) -> AppendRow:
    """Append every batch, flushing after each `every` of them and at the end."""
    spool = open_spool(path)
    try:
        started = time.perf_counter()
        commits = 0
        for i, readings in enumerate(batches, 1):
            spool.append(readings)
            if i % every == 0 or i == len(batches):
                await spool.flush()
                commits += 1
        seconds = time.perf_counter() - started
        assert spool.last_seq == len(batches) - 1
    finally:
        spool.close()
    return AppendRow(f"spool: commit every {every} batches", len(batches) * METERS, seconds, commits)


async def spool_as_publisher(path: Path, batches: list[list[Reading]]) -> AppendRow:
    """A producer appending as fast as it can (yielding to the loop between batches) while a commit task
    does what Publisher._commit does: wait_due, then flush."""
    spool = open_spool(path)
    commits = 0
    done = asyncio.Event()

    async def committer() -> None:
        nonlocal commits
        while True:
            await spool.wait_due()
            commits += await spool.flush()
            if spool.last_seq == len(batches) - 1:
                done.set()

    task = asyncio.create_task(committer())
    try:
        started = time.perf_counter()
        for readings in batches:
            spool.append(readings)
            await asyncio.sleep(0)
        await done.wait()
        seconds = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        spool.close()
    return AppendRow("spool: as the publisher commits (wait_due)", len(batches) * METERS, seconds, commits)


SpoolRow = tuple[int, int, str, int, int, int, int, bytes]
"""A row of the spool's batches table: seq, created_ms, boot_id, the summary columns, payload."""


def plain_sqlite(path: Path, rows: list[SpoolRow], every: int) -> AppendRow:
    """The same payloads and summary columns, serialised beforehand, into the spool's table with the
    spool's pragmas: one BEGIN IMMEDIATE ... COMMIT per `every` batches."""
    from agent.spool import SCHEMA

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(SCHEMA)
    try:
        started = time.perf_counter()
        commits = 0
        for first in range(0, len(rows), every):
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[first : first + every])
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (first + every,))
            db.execute("COMMIT")
            commits += 1
        seconds = time.perf_counter() - started
    finally:
        db.close()
    return AppendRow(f"baseline: sqlite3, commit every {every}", len(rows) * METERS, seconds, commits)


def bench_appends(work: Path, count: int, everies: list[int]) -> None:
    from agent.spool import COMMIT_READINGS, _row

    start_ms = int(time.time() * 1000) - count * INTERVAL_MS
    batches = [batch(n, start_ms) for n in range(count)]
    started = time.perf_counter()
    summaries = [_row(b) for b in batches]
    encode_s = time.perf_counter() - started
    rows = [(n, start_ms, BOOT_ID, *summary) for n, summary in enumerate(summaries)]
    size = sum(len(r[-1]) for r in rows) / len(rows)
    results: list[tuple[AppendRow, AppendRow]] = []
    for i, every in enumerate(everies):
        base = plain_sqlite(work / f"plain-{i}.db", rows, every)
        spool = asyncio.run(spool_every(work / f"spool-{i}.db", batches, every))
        results.append((spool, base))
    publisher = asyncio.run(spool_as_publisher(work / "spool-publisher.db", batches))
    print(
        f"\n1. durable appends: {count} batches x {METERS} readings x {len(CORE_QUANTITIES)} quantities "
        f"({size:,.0f} bytes of JSON per batch, {size / METERS:,.0f} per reading); WAL, synchronous=FULL; "
        f"COMMIT_READINGS {COMMIT_READINGS} (= a commit every {-(-COMMIT_READINGS // METERS)} batches "
        f"under load)"
    )
    print(
        f"{'':<4}{'writer':<46}{'commits':>8}{'seconds':>9}{'readings/s':>12}{'ms/commit':>11}{'spool/plain':>13}"
    )

    def line(row: AppendRow, ratio: str = "") -> None:
        print(
            f"{'':<4}{row.name:<46}{row.commits:>8}{row.seconds:>9.2f}{row.readings / row.seconds:>12,.0f}"
            f"{row.seconds / row.commits * 1000:>11.2f}{ratio:>13}"
        )

    for spool, base in results:
        line(base)
        line(spool, f"{spool.seconds / base.seconds:.2f}x")
    line(publisher)
    print(
        f"{'':<4}{'serialising only (READINGS.dump_json + summary)':<46}{'':>8}{encode_s:>9.2f}"
        f"{count * METERS / encode_s:>12,.0f}"
    )
    print(f"{'':<4}goal: >= 20,000 readings/s appended and committed")


# --- 2: draining a backlog ------------------------------------------------------------------------------


async def prefill(path: Path, batches: int, start_ms: int) -> float:
    """A spool file holding `batches` committed batches, written as the agent writes them (commits of
    COMMIT_READINGS readings); seconds taken."""
    from agent.spool import COMMIT_READINGS

    every = -(-COMMIT_READINGS // METERS)
    spool = open_spool(path, max_bytes=BIG_SPOOL)
    started = time.perf_counter()
    try:
        for n in range(batches):
            spool.append(batch(n, start_ms))
            if (n + 1) % every == 0:
                await spool.flush()
        await spool.flush()
        assert spool.last_seq == batches - 1, spool.last_seq
    finally:
        spool.close()
    return time.perf_counter() - started


def usage(process: Process) -> tuple[float, float]:
    """CPU seconds and peak RSS (MB) of a running child."""
    assert process.proc is not None
    return cpu_seconds(process.proc.pid), rss_mb(process.proc.pid)


def metric(api: str, name: str) -> float:
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def ledger_counts(ledger: Path) -> tuple[int, int]:
    """(backlog readings, live readings) in the ledger, read-only."""
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        backlog = db.execute(
            "SELECT count(*) FROM readings JOIN meter_keys k ON k.id = readings.meter WHERE k.meter_id BETWEEN ? AND ?",
            (meter_id(0), meter_id(METERS - 1)),
        ).fetchone()[0]
        live = db.execute(
            "SELECT count(*) FROM readings JOIN meter_keys k ON k.id = readings.meter WHERE k.meter_id = ?",
            (LIVE_METER,),
        ).fetchone()[0]
    finally:
        db.close()
    return int(backlog), int(live)


def broker_conf(batches: int) -> str:
    """deploy/mosquitto.conf's queueing, with a count bound above the whole backlog (plus the status
    and live messages of an hour): the collector's session can never drop a message."""
    return (
        f"max_queued_messages {batches + 10_000}\nmax_queued_bytes 0\nmax_inflight_messages 200\n"
        "queue_qos0_messages false\n"
    )


def write_agent_config(work: Path, broker: Mosquitto, spool: Path, max_inflight: int | None) -> Path:
    import yaml

    settings: dict[str, Any] = {"path": str(spool), "max_bytes": BIG_SPOOL}
    if max_inflight is not None:
        settings["max_inflight"] = max_inflight
    config = {
        "site": SITE,
        "gateway": GATEWAY,
        "poll_interval_s": INTERVAL_MS / 1000,
        "mqtt": {"host": broker.host, "port": broker.port},
        "clock": {"mode": "synced"},  # live readings stored, not quarantined awaiting a clock anchor
        "spool": settings,
        "buses": [
            {
                "name": "live",
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": free_port(),  # nothing listens: every poll fails fast
                "meters": [{"id": LIVE_METER, "profile": PROFILE, "unit": 1}],
            }
        ],
    }
    path = work / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Usage:
    cpu_s: float
    peak_rss_mb: float


@dataclass
class DrainResult:
    name: str
    readings: int
    ledger_s: float
    first_s: float
    """Agent start until the first backlog reading is in the ledger (start-up, spool check)."""
    tsdb_s: float | None
    live_readings: int
    usage: dict[str, Usage]
    half_rate: tuple[float, float]
    """Readings/s over the first and second half of the backlog."""


@contextlib.contextmanager
def started(process: Process) -> Iterator[Process]:
    process.start()
    try:
        yield process
    finally:
        process.stop(timeout=30)


def drain(
    work: Path, spool_file: Path, expected: int, *, tsdb: bool, max_inflight: int | None
) -> DrainResult:
    """Mosquitto, the collector (and VictoriaMetrics), then the agent on a copy of `spool_file`; until the
    ledger (and the TSDB) hold every backlog reading."""
    work.mkdir()
    spool = work / "spool.db"
    shutil.copyfile(spool_file, spool)
    batches = expected // METERS
    broker = Mosquitto.start(work / "mosquitto", extra_conf=broker_conf(batches))
    vm = VictoriaMetrics.start(work / "vm") if tsdb else None
    api_port = free_port()
    ledger = work / "ledger.db"
    write_collector_config(
        work / "collector.yaml", broker, ledger=ledger, api_port=api_port,
        tsdb_url=vm.url if vm else None, client_id="bench-collector",
    )  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    collector = Process(
        "collector",
        [sys.executable, "-m", "app", "collector", "run", "--config", str(work / "collector.yaml"),
         "--log-level", "WARNING"],
        work / "collector.log",
    )  # fmt: skip
    agent = Process(
        "agent",
        [sys.executable, "-m", "app", "agent", "run", "--config",
         str(write_agent_config(work, broker, spool, max_inflight)), "--log-level", "ERROR"],
        work / "agent.log",
    )  # fmt: skip
    try:
        with started(collector):
            wait_until(lambda: metric(api, "kilowatch_collector_mqtt_connected") == 1.0, 60, "the collector")
            others = {"collector": collector, "mosquitto": broker.process}
            if vm is not None:
                others["victoria-metrics"] = vm.process
            before = {name: usage(p)[0] for name, p in others.items()}  # their CPU until the agent starts
            with started(agent):
                t0 = time.perf_counter()
                first_s = half_s = ledger_s = tsdb_s = None
                while ledger_s is None or (vm is not None and tsdb_s is None):
                    now = time.perf_counter() - t0
                    if now > DRAIN_TIMEOUT_S or not agent.alive() or not collector.alive():
                        raise RuntimeError(
                            f"drain stuck after {now:.0f} s (agent alive {agent.alive()}, collector alive "
                            f"{collector.alive()}); agent log:\n{agent.log()[-2000:]}\ncollector log:\n"
                            f"{collector.log()[-2000:]}"
                        )
                    accepted = metric(api, "kilowatch_collector_readings_accepted_total")
                    if first_s is None and accepted > METERS:
                        first_s = now
                    if half_s is None and accepted >= expected / 2:
                        half_s = now
                    if ledger_s is None and accepted >= expected and ledger_counts(ledger)[0] >= expected:
                        ledger_s = now
                    if vm is not None and tsdb_s is None and ledger_s is not None:
                        written = metric(api, "kilowatch_collector_tsdb_points_written_total")
                        if written >= expected and metric(api, "kilowatch_collector_tsdb_outbox_points") == 0:
                            tsdb_s = now
                    time.sleep(0.2)
                took = {"agent": usage(agent)}
                for name, process in others.items():
                    cpu, rss = usage(process)
                    took[name] = (cpu - before[name], rss)
    finally:
        if vm is not None:
            vm.stop()
        broker.stop()
    backlog, live = ledger_counts(ledger)
    if backlog != expected:
        raise RuntimeError(f"the ledger holds {backlog} backlog readings, expected {expected}")
    assert first_s is not None
    assert half_s is not None
    half = expected / 2
    return DrainResult(
        name="agent -> Mosquitto -> collector ledger" + (" + VictoriaMetrics" if vm else ""),
        readings=backlog,
        ledger_s=ledger_s,
        first_s=first_s,
        tsdb_s=tsdb_s,
        live_readings=live,
        usage={name: Usage(*u) for name, u in took.items()},
        half_rate=(half / half_s, half / (ledger_s - half_s)),
    )


def baseline_drain(work: Path, spool_file: Path, expected: int, window: int) -> float:
    """Seconds for a bare aiomqtt publisher (QoS 1, `window` in flight) to get every payload of the spool
    file, read with sqlite3 as it goes, to a subscriber that only counts them."""
    broker = Mosquitto.start(work / "mosquitto", extra_conf=broker_conf(expected // METERS))
    try:
        return asyncio.run(bare_publish(broker, spool_file, expected // METERS, window))
    finally:
        broker.stop()


async def bare_publish(broker: Mosquitto, spool_file: Path, batches: int, window: int) -> float:
    import aiomqtt

    async with (
        aiomqtt.Client(broker.host, broker.port, identifier="bench-count") as sub,
        aiomqtt.Client(broker.host, broker.port, identifier="bench-pub", max_inflight_messages=window) as pub,
    ):
        await sub.subscribe(BASELINE_TOPIC, qos=1)
        pub.pending_calls_threshold = window + 1  # the window is the point: no warning
        slots = asyncio.Semaphore(window)

        async def one(payload: bytes) -> None:
            try:
                await pub.publish(BASELINE_TOPIC, payload, qos=1)
            finally:
                slots.release()

        async def publish() -> None:
            db = sqlite3.connect(f"file:{spool_file}?mode=ro", uri=True)
            tasks = set()
            try:
                for (payload,) in db.execute("SELECT payload FROM batches ORDER BY seq"):
                    await slots.acquire()
                    task = asyncio.create_task(one(payload))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.gather(*tasks)
            finally:
                db.close()

        async def count() -> None:
            received = 0
            async for _ in sub.messages:
                received += 1
                if received == batches:
                    return

        t0 = time.perf_counter()
        await asyncio.gather(publish(), count())
        return time.perf_counter() - t0


def print_drain(
    days: float,
    expected: int,
    prefill_s: float,
    size: int,
    base_s: float,
    window: int,
    runs: list[DrainResult],
) -> None:
    print(
        f"\n2. draining {days:g} days of {METERS} meters every {INTERVAL_MS // 1000} s: {expected:,} readings in "
        f"{expected // METERS:,} batches; spool file {size / MB:,.0f} MB, pre-filled in {prefill_s:.0f} s "
        f"({expected / prefill_s:,.0f} readings/s)"
    )
    print(
        f"{'':<4}{'path':<52}{'to ledger s':>12}{'readings/s':>12}{'1st half/s':>12}{'2nd half/s':>12}{'first s':>9}{'TSDB s':>8}{'live':>6}"
    )
    print(
        f"{'':<4}{f'baseline: spool rows -> Mosquitto -> counter ({window} in flight)':<52}{base_s:>12.1f}"
        f"{expected / base_s:>12,.0f}"
    )
    for r in runs:
        tsdb = f"{r.tsdb_s:>8.1f}" if r.tsdb_s is not None else f"{'-':>8}"
        print(
            f"{'':<4}{r.name:<52}{r.ledger_s:>12.1f}{r.readings / r.ledger_s:>12,.0f}"
            f"{r.half_rate[0]:>12,.0f}{r.half_rate[1]:>12,.0f}{r.first_s:>9.1f}{tsdb}{r.live_readings:>6}"
        )
    print(
        f"{'':<4}(first s: agent start until the first backlog readings are in the ledger; live: {LIVE_METER}'s"
    )
    print(f"{'':<4} readings stored meanwhile; TSDB s: until VictoriaMetrics took every point)")
    print(f"{'':<4}{'process':<28}{'CPU s':>8}{'CPU/wall':>9}{'peak RSS MB':>13}")
    for r in runs:
        print(f"{'':<4}{r.name}:")
        wall = r.tsdb_s or r.ledger_s
        for name, u in r.usage.items():
            print(f"{'':<6}{name:<26}{u.cpu_s:>8.1f}{u.cpu_s / wall:>9.0%}{u.peak_rss_mb:>13.1f}")
    for r in runs:
        print(
            f"{'':<4}ledger holds exactly {r.readings:,} backlog readings of {expected:,} expected ({r.name})"
        )
    print(f"{'':<4}goal: >= 10,000 readings/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--days", type=float, default=7, help="backlog to drain, in days (default 7)")
    parser.add_argument("--quick", action="store_true", help="--days 1 and 1,000 append batches")
    parser.add_argument("--append-batches", type=int, default=3000, help="batches per append run (3000)")
    parser.add_argument(
        "--every", type=int, nargs="+", default=[1, 8, 63, 256], help="batches per commit (1 8 63 256)"
    )
    parser.add_argument("--no-tsdb", action="store_true", help="skip the drain with VictoriaMetrics")
    parser.add_argument("--only", choices=("appends", "drain"), help="run one part")
    parser.add_argument(
        "--max-inflight", type=int, help="the agent's spool.max_inflight (default: the agent's default)"
    )
    args = parser.parse_args()
    if args.quick:
        args.days, args.append_batches = 1, 1000
    from agent.config import SpoolSettings

    window = args.max_inflight or SpoolSettings().max_inflight
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}"
    )
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-") as tmp:
        work = Path(tmp)
        if args.only != "drain":
            (work / "appends").mkdir()
            bench_appends(work / "appends", args.append_batches, args.every)
            shutil.rmtree(work / "appends")
        if args.only == "appends":
            return
        batches = round(args.days * PER_DAY)
        expected = batches * METERS
        spool_file = work / "prefilled.db"
        start_ms = int(time.time() * 1000) - batches * INTERVAL_MS
        prefill_s = asyncio.run(prefill(spool_file, batches, start_ms))
        base_s = baseline_drain(work / "baseline", spool_file, expected, window)
        runs = [drain(work / "drain", spool_file, expected, tsdb=False, max_inflight=args.max_inflight)]
        if not args.no_tsdb:
            runs.append(
                drain(work / "drain-tsdb", spool_file, expected, tsdb=True, max_inflight=args.max_inflight)
            )
        print_drain(args.days, expected, prefill_s, spool_file.stat().st_size, base_s, window, runs)


if __name__ == "__main__":
    main()
