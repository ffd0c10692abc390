"""API latency benchmark: p50/p95/p99 of the read routes against a real `kilowatch collector run` process.

Run from the repository root: ``.venv/bin/python bench/api.py [--meters 1000] [--days 90] [--ledger PATH]``.

It fills a ledger with `--meters` meters x `--days` days of 15-minute intervals (written straight into the
ledger's tables: ingesting the readings behind them would take hours) plus each meter's latest reading and
some alerts, creates an admin API key, starts the collector on a free loopback port (no broker: the API
serves without one) and times `/meters`, `/latest`, intervals over 1, 7 and 31 days and `/alerts` with 1
and 16 concurrent clients, each on its own keep-alive connection. Figures are printed, never asserted.
`--ledger` keeps the filled ledger for the next run (filling 1,000 x 90 days takes a minute or two).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import yaml

from app.processes import Process, free_port, wait_until
from collector.access import Access, Role
from collector.alerts import AlertStore
from collector.detectors.findings import Detector, Finding
from collector.store import Ledger
from collector.store.access import AccessStore
from kilowatch.timebase import SLOT_MS

SITES = 10
DAY_MS = 24 * 3600 * 1000
ROUTES: dict[str, Callable[[str, int], str]] = {
    "/meters": lambda meter, end: "/api/v1/meters?limit=1000",
    "/latest": lambda meter, end: f"/api/v1/meters/{meter}/latest",
    "intervals 1 d": lambda meter, end: _intervals(meter, end, 1),
    "intervals 7 d": lambda meter, end: _intervals(meter, end, 7),
    "intervals 31 d": lambda meter, end: _intervals(meter, end, 31),
    "/alerts": lambda meter, end: "/api/v1/alerts?limit=100",
}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _intervals(meter: str, end_ms: int, days: int) -> str:
    return f"/api/v1/meters/{meter}/intervals?from={_iso(end_ms - days * DAY_MS)}&to={_iso(end_ms)}"


def _meter(i: int) -> str:
    return f"m{i:04d}"


def fill(ledger: Path, meters: int, days: int, end_ms: int) -> None:
    """Intervals, meters and latest readings in the ledger's own tables; then alerts through the store."""
    Ledger(ledger).close()  # creates the tables
    start_ms = end_ms - days * DAY_MS
    slots = days * DAY_MS // SLOT_MS
    values = json.dumps({"active_power_w": 1500.0, "energy_import_kwh": 1234.5})

    def intervals(meter: str) -> Iterator[tuple[object, ...]]:
        for slot in range(slots):
            kwh = 0.2 + (slot % 96) / 200
            yield meter, start_ms + slot * SLOT_MS, kwh, 0.0, kwh * 5, 15

    with sqlite3.connect(ledger) as db:
        db.execute("PRAGMA synchronous=OFF")
        for i in range(meters):
            meter, site = _meter(i), f"site{i % SITES}"
            db.execute(
                "INSERT INTO meters VALUES (?, ?, ?, 'eastron-sdm630', ?, ?)",
                (meter, site, f"gw-{site}", start_ms, end_ms - 1),
            )
            db.execute(
                "INSERT INTO latest VALUES (?, ?, ?, 'good', '{}', 'synced', '{}')",
                (meter, end_ms - 60_000, values),
            )
            db.executemany("INSERT INTO intervals VALUES (?, ?, ?, ?, ?, ?)", intervals(meter))
            if i % 100 == 99:
                db.commit()
                print(f"  {i + 1} meters filled", file=sys.stderr)
    with AlertStore(ledger) as store:
        for i in range(2000):
            at = start_ms + i * (days * DAY_MS // 2000)
            store.apply(
                Finding(
                    site=f"site{i % SITES}",
                    meter=_meter(i % meters),
                    detector=Detector.AFTER_HOURS,
                    rule=f"R{i}",
                    start_ms=at,
                    end_ms=at + 3_600_000,
                    detected_at=at + 3_600_000,
                    wasted_kwh=1.5,
                    message_en="bench",
                    message_vi="bench",
                )
            )


async def _client(base: str, key: str, paths: list[str], latencies: list[float], failures: list[str]) -> None:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        await client.get("/healthz")  # open the keep-alive connection outside the timing
        for path in paths:
            began = time.perf_counter()
            response = await client.get(path)
            latencies.append(time.perf_counter() - began)
            if response.status_code != 200:
                failures.append(f"{path}: {response.status_code} {response.text[:200]}")


def cpu_s(pid: int) -> float:
    """CPU time (user + system) the process `pid` has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    base: str, key: str, route: str, clients: int, requests: int, meters: int, end: int, server: int
) -> str:
    rng = random.Random(route)
    latencies: list[float] = []
    failures: list[str] = []
    per_client = max(1, requests // clients)
    cpu_before = cpu_s(server)
    began = time.perf_counter()
    await asyncio.gather(
        *(
            _client(
                base,
                key,
                [ROUTES[route](_meter(rng.randrange(meters)), end) for _ in range(per_client)],
                latencies,
                failures,
            )
            for _ in range(clients)
        )
    )
    elapsed = time.perf_counter() - began
    cpu = (cpu_s(server) - cpu_before) / len(latencies)
    if failures:
        raise SystemExit(f"{route}: {len(failures)} failures, e.g. {failures[0]}")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"{route:<16} {clients:>3} {len(latencies):>6} {q[49] * 1000:>8.1f} {q[94] * 1000:>8.1f} "
        f"{q[98] * 1000:>8.1f} {len(latencies) / elapsed:>8.0f} {cpu * 1000:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=400, help="Requests per route and concurrency")
    parser.add_argument("--ledger", type=Path, help="Keep (or reuse) the filled ledger here")
    args = parser.parse_args()
    end_ms = (int(time.time() * 1000) // DAY_MS) * DAY_MS
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-api-") as tmp:
        workdir = Path(tmp)
        ledger = args.ledger or workdir / "ledger.db"
        if ledger.exists():
            with sqlite3.connect(ledger) as db:
                end_ms = int(db.execute("SELECT max(last_seen) FROM meters").fetchone()[0]) + 1
            print(f"reusing {ledger}", file=sys.stderr)
        else:
            began = time.monotonic()
            fill(ledger, args.meters, args.days, end_ms)
            print(f"filled {ledger} in {time.monotonic() - began:.0f} s", file=sys.stderr)
        with AccessStore(ledger) as store:
            _, key = Access(store).create_key("bench", Role.ADMIN, None, int(time.time() * 1000))
        port = free_port()
        config = workdir / "collector.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "mqtt": {"host": "127.0.0.1", "port": free_port()},  # no broker: the API serves anyway
                    "ledger": {"path": str(ledger)},
                    "api": {"host": "127.0.0.1", "port": port},
                }
            )
        )
        collector = Process(
            "collector",
            [
                sys.executable,
                "-m",
                "app",
                "collector",
                "run",
                "--config",
                str(config),
                "--log-level",
                "WARNING",
            ],
            workdir / "collector.log",
        ).start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 60, "the collector's API")
            print(
                f"{args.meters} meters x {args.days} days; times in ms (cpu: the collector's CPU time per request); "
                f"load average {os.getloadavg()[0]:.1f}"
            )
            print(
                f"{'route':<16} {'clients':>3} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'req/s':>8} {'cpu':>8}"
            )
            assert collector.proc is not None
            pid = collector.proc.pid
            for clients in (1, 16):
                for route in ROUTES:
                    line = asyncio.run(
                        measure(base, key, route, clients, args.requests, args.meters, end_ms, pid)
                    )
                    print(line, flush=True)
        finally:
            collector.stop()


if __name__ == "__main__":
    main()
