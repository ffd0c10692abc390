"""Live-serving benchmark: one `kilowatch sim serve --scenario mixed-province` process (>= 200 meters on
104 buses over TCP; RTU buses as RTU-over-TCP), every meter's main block read once per second.

Run from the repository root: ``.venv/bin/python bench/sim_serve.py [--seconds 20]``. Each bus gets its own
connection (as one gateway per bus); the units of a bus are read one after the other, as a master on one
line does. Prints the simulator's CPU per second (from /proc/<pid>/stat) and the request latency (median,
p99). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType

from kilowatch.profiles import Table, load_builtin
from sim.scenario import load_scenario

SERVING = re.compile(
    r"^serving \d+ meters? \(\S+: \S+, units ([\d,]+)\) on (tcp|rtu-over-tcp) ([\d.]+):(\d+)$"
)


def main_block() -> tuple[int, int]:
    """(address, count) of the SDM630's first run of contiguous input registers: one request."""
    profile = load_builtin("eastron-sdm630")
    registers = sorted((r for r in profile.registers if r.table is Table.INPUT), key=lambda r: r.address)
    end = registers[0].address
    for reg in registers:
        if (
            reg.address != end
            or end + reg.count - registers[0].address > profile.quirks.max_registers_per_request
        ):
            break
        end += reg.count
    return registers[0].address, end - registers[0].address


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def poll_bus(
    host: str,
    port: int,
    framer: FramerType,
    units: list[int],
    block: tuple[int, int],
    seconds: int,
    latencies: list[float],
    errors: list[str],
) -> None:
    client = AsyncModbusTcpClient(host, port=port, framer=framer, timeout=2, retries=0)
    await client.connect()
    loop = asyncio.get_running_loop()
    tick = loop.time()
    for _ in range(seconds):
        for unit in units:
            sent = time.perf_counter()
            response = await client.read_input_registers(block[0], count=block[1], device_id=unit)
            latencies.append(time.perf_counter() - sent)
            if response.isError():
                errors.append(f"{port}/{unit}: {response}")  # a scenario fault window, e.g. an exception
        tick += 1
        await asyncio.sleep(max(0.0, tick - loop.time()))
    client.close()


async def measure(lines: list[re.Match[str]], pid: int, seconds: int) -> None:
    block = main_block()
    latencies: list[float] = []
    errors: list[str] = []
    cpu: list[float] = []

    async def sample_cpu() -> None:
        last = cpu_seconds(pid)
        while True:
            await asyncio.sleep(1)
            now = cpu_seconds(pid)
            cpu.append(now - last)
            last = now

    sampler = asyncio.create_task(sample_cpu())
    await asyncio.gather(*(
        poll_bus(m[3], int(m[4]), FramerType.SOCKET if m[2] == "tcp" else FramerType.RTU,
                 [int(u) for u in m[1].split(",")], block, seconds, latencies, errors)
        for m in lines
    ))  # fmt: skip
    sampler.cancel()
    meters = sum(len(m[1].split(",")) for m in lines)
    ordered = sorted(latencies)
    print(
        f"{meters} meters on {len(lines)} buses, block of {block[1]} registers, {seconds} s at 1 poll/s/meter"
    )
    print(f"simulator CPU per second: {', '.join(f'{c:.2f}' for c in cpu)} s "
          f"(mean {statistics.fmean(cpu) * 100:.0f} % of one core)")  # fmt: skip
    print(f"requests: {len(latencies)}, errors {len(errors)} (fault windows); latency median "
          f"{statistics.median(ordered) * 1000:.1f} ms, p99 {ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--scenario", default="mixed-province")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "sim.log"
        with log.open("wb") as out:
            sim = subprocess.Popen(
                [sys.executable, "-m", "app", "sim", "serve", "--scenario", args.scenario,
                 "--tcp", "127.0.0.1:0", "--start", "2025-05-06T09:00:00+07:00"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        spec = load_scenario(args.scenario)
        buses = len({(m.site_id, m.gateway, m.bus) for m in spec.meters})
        try:
            deadline = time.monotonic() + 120
            lines: list[re.Match[str]] = []
            while len(lines) < buses:
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise SystemExit(f"the simulator did not start serving:\n{log.read_text()}")
                time.sleep(0.2)
                lines = [m for line in log.read_text().splitlines() if (m := SERVING.match(line))]
            asyncio.run(measure(lines, sim.pid, args.seconds))
        finally:
            sim.terminate()
            sim.wait(10)


if __name__ == "__main__":
    main()
