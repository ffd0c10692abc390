"""Agent bus benchmark: 32 SDM630-class meters polled every second, the agent beside a naive poller.

Run from the repository root: ``.venv/bin/python bench/agent_bus.py [--cycles 20] [--fault-seconds 30]``.

Every figure is printed beside a baseline measured in the same run, never asserted:

1. requests and registers per cycle: the agent's plan (``agent.planner.plan``) vs one request per quantity;
2. estimated RTU bus time per cycle at 9600 8N1 (``agent.bus_time``): the agent's plan vs the best plan
   found by trying every way to split the registers into requests (independent of the planner's dynamic
   programming) vs one request per quantity;
3. CPU per meter-poll (spooling and publishing included) and peak RSS of the real agent (``kilowatch agent
   run`` in a child process, its SQLite spool file in the benchmark's temporary folder, committed every
   ``commit_interval_s`` as configured) vs a naive poller (pymodbus, one request per quantity, one MQTT
   message per meter, nothing on disk), both reading one ``kilowatch sim serve`` process (units 1-32,
   Modbus TCP on loopback) and publishing to a real Mosquitto; CPU comes from /proc/<pid>/stat between two
   cycles after a warm-up, so start-up is not counted, and the simulator's CPU never is;
4. with one meter dead (``--fault N:dead``), how often the other 31 update, read from the readings topics,
   for both pollers with the same timeout and retries.

The meters are read for what the issue lists (phase voltages and currents, total power, power factor,
frequency, import and export energy): a reduced copy of the shipped SDM630 profile, written to a
temporary profile folder that the agent child is pointed at (its only difference from ``kilowatch agent
run``). The naive poller imports no kilowatch code, so its RSS is that of a small pymodbus script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.processes import Mosquitto, Process, free_port, port_open, wait_until

if TYPE_CHECKING:
    import aiomqtt

    from agent.bus_time import RtuTiming
    from agent.planner import Request
    from kilowatch.profiles import Profile, Register

# kilowatch and pydantic are imported inside the functions that need them: this file is also the naive
# poller's program, whose memory must not include them.

METERS = 32
CORE_QUANTITIES = (
    "voltage_l1_v",
    "voltage_l2_v",
    "voltage_l3_v",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
    "active_power_w",
    "power_factor",
    "frequency_hz",
    "energy_import_kwh",
    "energy_export_kwh",
)
BENCH_PROFILE = "eastron-sdm630-bench"
SITE, GATEWAY = "bench-site", "gw-bench"
NAIVE_ROOT = "bench-naive"
RETRIES = 1
"""Extra attempts after a timeout, the same for both pollers (the agent's built-in default)."""
WARMUP_CYCLES = 3
STALL_S = 60.0
"""A poller that publishes nothing for this long has failed; its log is shown."""
AGENT_CHILD, NAIVE_CHILD = "_agent", "_naive"


def meter_id(unit: int) -> str:
    return f"m{unit:02d}"


# --- 1 and 2: plans --------------------------------------------------------------------------------------


def bench_profile(*, fill_gaps: bool = False) -> Profile:
    """The shipped SDM630 profile reduced to the quantities the issue lists."""
    from kilowatch.profiles import load_builtin

    full = load_builtin("eastron-sdm630")
    return full.model_copy(
        update={
            "id": BENCH_PROFILE,
            "aliases": [],
            "registers": [r for r in full.registers if r.quantity in CORE_QUANTITIES],
            "test_vectors": [],
            "quirks": full.quirks.model_copy(update={"fill_gaps": fill_gaps}),
        }
    )


def naive_plan(profile: Profile) -> list[Request]:
    """One request per quantity, as most pollers do."""
    from agent.planner import Request

    return [Request(r.table, r.address, r.count, (r,)) for r in profile.registers]


def _feasible(run: Sequence[Register], profile: Profile) -> bool:
    quirks = profile.quirks
    start, end = run[0].address, run[-1].address + run[-1].count
    contiguous = all(a.address + a.count == b.address for a, b in itertools.pairwise(run))
    return (
        end - start <= quirks.max_registers_per_request
        and (quirks.fill_gaps or contiguous)
        and (len(run) == 1 or not quirks.single_register_reads)
        and not any(f.overlaps(run[0].table, start, end - start) for f in quirks.forbidden_ranges)
    )


def best_plan(profile: Profile, timing: RtuTiming) -> tuple[list[Request], int]:
    """The cheapest plan by exhaustion: every split of each table's sorted registers into runs, one request
    per run. Returns the plan and how many splits were tried."""
    from agent.planner import Request
    from kilowatch.profiles import Table

    plan: list[Request] = []
    tried = 0
    for table in Table:
        registers = sorted((r for r in profile.registers if r.table is table), key=lambda r: r.address)
        if not registers:
            continue
        best: tuple[float, int, list[Request]] | None = None
        for cuts in itertools.product((False, True), repeat=len(registers) - 1):
            tried += 1
            runs: list[list[Register]] = [[]]
            for register, cut in zip(registers, (False, *cuts), strict=True):
                if cut:
                    runs.append([])
                runs[-1].append(register)
            if not all(_feasible(run, profile) for run in runs):
                continue
            requests = [
                Request(table, run[0].address, run[-1].address + run[-1].count - run[0].address, tuple(run))
                for run in runs
            ]
            seconds = sum(timing.read_s(r.count) for r in requests)
            if best is None or (seconds, len(requests)) < best[:2]:
                best = (seconds, len(requests), requests)
        assert best is not None, "one request per register is always feasible"
        plan.extend(best[2])
    return plan, tried


def print_plans() -> None:
    from agent.bus_time import RtuTiming, SerialLine
    from agent.planner import plan, plan_time_s

    timing = RtuTiming(line=SerialLine(baud=9600))
    print(
        f"\n1-2. read plans for {len(CORE_QUANTITIES)} quantities per meter, {METERS} meters, "
        f"RTU at {timing.line}, turnaround {timing.turnaround_s * 1000:g} ms (agent.bus_time)"
    )
    header = f"{'':<4}{'plan':<42}{'req/meter':>10}{'req/cycle':>10}{'regs/cycle':>11}{'bus ms/cycle':>13}{'of 1 s':>8}{'fit 1 s':>8}"
    for fill_gaps in (False, True):
        profile = bench_profile(fill_gaps=fill_gaps)
        agent = plan(profile, timing=timing)
        best, tried = best_plan(profile, timing)
        rows = [
            ("naive: one request per quantity", naive_plan(profile)),
            ("agent: agent.planner.plan", agent),
            (f"best: exhaustive over {tried} splits", best),
        ]
        said = "as the profile says" if not fill_gaps else "if the meter answered unmapped registers"
        print(f"  fill_gaps {str(fill_gaps).lower()} ({said}):")
        print(header)
        for name, requests in rows:
            cycle_s = plan_time_s(requests, timing) * METERS
            registers = sum(r.count for r in requests) * METERS
            print(
                f"{'':<4}{name:<42}{len(requests):>10}{len(requests) * METERS:>10}{registers:>11}"
                f"{cycle_s * 1000:>13.1f}{cycle_s:>8.0%}{int(METERS / cycle_s):>8}"
            )
        print(f"{'':<4}(fit 1 s: meters whose poll fits a one-second cycle on one line)")
        spans = ", ".join(f"{r.address:#06x}+{r.count}" for r in agent)
        ratio = plan_time_s(agent, timing) / plan_time_s(best, timing)
        print(
            f"{'':<4}agent requests: {spans}; agent/best bus time {ratio:.3f} (goal <= 1.05), "
            f"naive/agent {plan_time_s(naive_plan(profile), timing) / plan_time_s(agent, timing):.2f}"
        )


# --- the naive poller (a child process) -----------------------------------------------------------------


@dataclass(frozen=True)
class NaiveSpec:
    """What the naive poller needs, passed as JSON on its command line."""

    modbus_host: str
    modbus_port: int
    mqtt_host: str
    mqtt_port: int
    units: list[int]
    registers: list[tuple[str, int]]
    """(quantity, address) of float32 high-word-first input registers."""
    timeout_s: float
    retries: int


async def naive_poller(spec: NaiveSpec) -> None:
    """What a typical Python poller does: one pymodbus client with its own timeout and retries, one request
    per quantity, skip what fails, one MQTT message per meter, every second on the second."""
    import aiomqtt
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.exceptions import ModbusException

    client = AsyncModbusTcpClient(
        spec.modbus_host, port=spec.modbus_port, timeout=spec.timeout_s, retries=spec.retries
    )
    await client.connect()
    async with aiomqtt.Client(spec.mqtt_host, spec.mqtt_port, identifier="bench-naive") as mqtt:
        while True:
            await asyncio.sleep(1 - time.time() % 1)
            for unit in spec.units:
                ts = int(time.time() * 1000)
                values = {}
                for quantity, address in spec.registers:
                    try:
                        response = await client.read_input_registers(address, count=2, device_id=unit)
                    except ModbusException:
                        continue
                    if not response.isError():
                        values[quantity] = struct.unpack(">f", struct.pack(">2H", *response.registers))[0]
                payload = json.dumps({"meter": meter_id(unit), "ts": ts, "values": values})
                await mqtt.publish(f"{NAIVE_ROOT}/{meter_id(unit)}", payload, qos=1)


# --- the agent (a child process) ------------------------------------------------------------------------


def agent_child(profiles: Path, argv: list[str]) -> None:
    """``kilowatch <argv>`` with the built-in profile folder replaced by `profiles`."""
    import kilowatch.profiles

    kilowatch.profiles.builtin_dir = lambda: profiles
    from app.cli import app

    app(argv)


def write_agent_files(work: Path, broker: Mosquitto, modbus_port: int, timeout_s: float) -> Path:
    """The bench profile in a profile folder of its own, and an agent.yaml polling it; returns the config."""
    import yaml

    profiles = work / "profiles"
    profiles.mkdir()
    profile = bench_profile()
    (profiles / f"{profile.id}.yaml").write_text(yaml.safe_dump(profile.model_dump(mode="json")))
    config = {
        "site": SITE,
        "gateway": GATEWAY,
        "poll_interval_s": 1,
        "mqtt": {"host": broker.host, "port": broker.port},
        "spool": {"path": str(work / "agent-spool.db")},
        "buses": [
            {
                "name": "sim",
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "timing": {"timeout_s": timeout_s, "retries": RETRIES},
                "meters": [
                    {"id": meter_id(u), "profile": profile.id, "unit": u} for u in range(1, METERS + 1)
                ],
            }
        ],
    }
    path = work / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- 3 and 4: measuring a running poller ----------------------------------------------------------------

Seen = tuple[str, int, bool]
"""(meter, reading timestamp in ms, every quantity read)."""


@dataclass(frozen=True)
class Arm:
    """One poller under test: how to start it and how to read what it publishes."""

    name: str
    command: list[str]
    topic: str
    parse: Callable[[bytes], tuple[list[Seen], bool]]
    """A message -> the readings in it, and whether it ends a poll cycle."""


def parse_agent(payload: bytes) -> tuple[list[Seen], bool]:
    from kilowatch.mqtt_contract import Quality, ReadingsBatch

    batch = ReadingsBatch.model_validate_json(payload)
    return [(r.meter, r.ts, r.quality is Quality.GOOD) for r in batch.readings], True


def parse_naive(payload: bytes) -> tuple[list[Seen], bool]:
    message = json.loads(payload)
    good = len(message["values"]) == len(CORE_QUANTITIES)
    return [(message["meter"], message["ts"], good)], message["meter"] == meter_id(METERS)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


@contextlib.asynccontextmanager
async def running(broker: Mosquitto, arm: Arm, log: Path) -> AsyncIterator[tuple[int, Messages]]:
    """Subscribe to the arm's topic, then start it; yields its pid and what it publishes."""
    import aiomqtt

    async with aiomqtt.Client(broker.host, broker.port, identifier=f"bench-watch-{arm.name}") as client:
        await client.subscribe(arm.topic, qos=1)
        child = Process(arm.name, arm.command, log).start()
        assert child.proc is not None
        try:
            yield child.proc.pid, Messages(client, arm, child)
        finally:
            child.stop()


class Messages:
    """A poller's messages, parsed, with the time each arrived."""

    def __init__(self, client: aiomqtt.Client, arm: Arm, child: Process) -> None:
        self._messages = aiter(client.messages)
        self._arm = arm
        self._child = child

    async def next(self, within_s: float = STALL_S) -> tuple[list[Seen], bool, float]:
        """The next message's readings, whether it ends a cycle, and its arrival; TimeoutError if none
        comes within `within_s` (a RuntimeError quoting the poller's log after STALL_S)."""
        try:
            message = await asyncio.wait_for(anext(self._messages), min(within_s, STALL_S))
        except TimeoutError:
            if within_s < STALL_S:
                raise
            raise RuntimeError(
                f"{self._arm.name} published nothing for {STALL_S:g} s; its log:\n{self._child.log()[-3000:]}"
            ) from None
        assert isinstance(message.payload, bytes | bytearray)
        seen, cycle_end = self._arm.parse(bytes(message.payload))
        return seen, cycle_end, time.monotonic()


@dataclass(frozen=True)
class CpuFigures:
    cpu_s: float
    polls: int
    peak_rss_mb: float
    incomplete: int
    """Readings in the measured cycles that lacked a quantity (should be 0: no meter is faulty)."""


async def measure_cpu(broker: Mosquitto, arm: Arm, log: Path, cycles: int) -> CpuFigures:
    """CPU between the end of the warm-up cycles and `cycles` cycles later."""
    async with running(broker, arm, log) as (pid, messages):
        ended = incomplete = 0
        cpu0 = 0.0
        while ended < WARMUP_CYCLES + cycles:
            seen, cycle_end, _ = await messages.next()
            if ended >= WARMUP_CYCLES:
                incomplete += sum(not good for _, _, good in seen)
            ended += cycle_end
            if cycle_end and ended == WARMUP_CYCLES:
                cpu0 = cpu_seconds(pid)
        return CpuFigures(
            cpu_s=cpu_seconds(pid) - cpu0,
            polls=cycles * METERS,
            peak_rss_mb=peak_rss_mb(pid),
            incomplete=incomplete,
        )


async def watch_updates(broker: Mosquitto, arm: Arm, log: Path, seconds: float) -> list[tuple[float, Seen]]:
    """Every reading published during `seconds` from the first one, with its arrival time."""
    async with running(broker, arm, log) as (_, messages):
        seen, _, first = await messages.next()
        out = [(first, s) for s in seen]
        while (left := first + seconds - time.monotonic()) > 0:
            try:
                seen, _, arrived = await messages.next(within_s=left)
            except TimeoutError:
                break
            out.extend((arrived, s) for s in seen)
        return out


def print_cpu(rows: list[tuple[str, CpuFigures]]) -> None:
    print(
        f"{'':<4}{'poller':<44}{'cycles':>7}{'CPU s':>8}{'ms/meter-poll':>15}{'peak RSS MB':>13}{'incomplete':>12}"
    )
    for name, f in rows:
        print(
            f"{'':<4}{name:<44}{f.polls // METERS:>7}{f.cpu_s:>8.2f}{f.cpu_s / f.polls * 1000:>15.3f}"
            f"{f.peak_rss_mb:>13.1f}{f.incomplete:>12}"
        )


def print_updates(name: str, updates: list[tuple[float, Seen]], dead: str, seconds: float) -> None:
    """Per live meter: updates (complete readings) in the window and the intervals between them, for the
    whole window and for its second half (once the agent's breaker has had time to open)."""
    start = min(arrived for arrived, _ in updates)
    for label, since in (("whole", start), ("2nd half", start + seconds / 2)):
        span = start + seconds - since
        stamps: dict[str, list[int]] = defaultdict(list)
        for arrived, (meter, ts, good) in updates:
            if meter != dead and good and arrived >= since:
                stamps[meter].append(ts)
        counts = [len(stamps[meter_id(u)]) for u in range(1, METERS + 1) if meter_id(u) != dead]
        gaps = [(b - a) / 1000 for ts in stamps.values() for a, b in itertools.pairwise(sorted(ts))]
        mean = statistics.fmean(counts)
        every = f"{span / mean:.2f}" if mean else "never"
        longest = f"{max(gaps):.1f}" if gaps else f">{span:.0f}"
        within = f"{sum(g <= 1.5 for g in gaps) / len(gaps):.0%}" if gaps else "-"
        starved = sum(c == 0 for c in counts)
        print(
            f"{'':<4}{name:<30}{label:<9}{span:>5.0f}{mean:>9.1f}{min(counts):>6}{every:>9}"
            f"{longest:>9}{within:>9}{starved:>6}"
        )


# --- the run --------------------------------------------------------------------------------------------


def start_sim(work: Path, name: str, port: int, fault: list[str]) -> Process:
    sim = Process(
        name,
        [
            sys.executable,
            "-m",
            "app",
            "sim",
            "serve",
            "--profile",
            "eastron-sdm630",
            "--units",
            f"1-{METERS}",
            "--tcp",
            f"127.0.0.1:{port}",
            *fault,
        ],
        work / f"{name}.log",
    ).start()
    wait_until(lambda: port_open("127.0.0.1", port) or not sim.alive(), 30, f"{name} to listen")
    if not sim.alive():
        raise RuntimeError(f"{name} exited at start:\n{sim.log()}")
    return sim


def arms(work: Path, broker: Mosquitto, modbus_port: int, timeout_s: float) -> tuple[Arm, Arm]:
    from kilowatch.mqtt_contract import Channel, topic

    config = write_agent_files(work, broker, modbus_port, timeout_s)
    profile = bench_profile()
    spec = NaiveSpec(
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        units=list(range(1, METERS + 1)),
        registers=[(r.quantity, r.address) for r in profile.registers],
        timeout_s=timeout_s,
        retries=RETRIES,
    )
    here = str(Path(__file__).resolve())
    agent = Arm(
        "agent",
        [
            sys.executable,
            here,
            AGENT_CHILD,
            str(work / "profiles"),
            "agent",
            "run",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ],
        topic(SITE, GATEWAY, Channel.READINGS),
        parse_agent,
    )
    naive = Arm(
        "naive", [sys.executable, here, NAIVE_CHILD, json.dumps(asdict(spec))], f"{NAIVE_ROOT}/+", parse_naive
    )
    return agent, naive


def check_profile_fits_naive() -> None:
    """The naive poller decodes float32 high word first only; the bench profile must be just that."""
    from kilowatch.registers import DataType, WordOrder

    odd = [
        r.quantity
        for r in bench_profile().registers
        if r.type is not DataType.FLOAT32 or r.word_order is not WordOrder.ABCD or r.scale != 1 or r.offset
    ]
    if odd:
        raise RuntimeError(f"the naive poller cannot decode {odd}")


async def measure(work: Path, args: argparse.Namespace) -> None:
    from agent.config import SpoolSettings

    check_profile_fits_naive()
    broker = Mosquitto.start(work / "mosquitto")
    dead = meter_id(args.dead_unit)
    try:
        port = free_port()
        agent, naive = arms(work, broker, port, args.timeout)
        sim = start_sim(work, "sim", port, [])
        try:
            cpu = [
                (
                    f"agent: kilowatch agent run ({len(bench_profile().registers)} quantities)",
                    await measure_cpu(broker, agent, work / "agent.log", args.cycles),
                ),
                (
                    "naive: pymodbus, 1 request per quantity",
                    await measure_cpu(broker, naive, work / "naive.log", args.cycles),
                ),
            ]
        finally:
            sim.stop()
        sim = start_sim(work, "sim-fault", port, ["--fault", f"{args.dead_unit}:dead"])
        try:
            updates = [
                ("agent", await watch_updates(broker, agent, work / "agent-fault.log", args.fault_seconds)),
                ("naive", await watch_updates(broker, naive, work / "naive-fault.log", args.fault_seconds)),
            ]
        finally:
            sim.stop()
    finally:
        broker.stop()
    print(
        f"\n3. CPU per meter-poll including spooling and publishing (QoS 1 to Mosquitto) and peak RSS, {METERS} healthy "
        f"meters every second over Modbus TCP (simulator in its own process, not counted); "
        f"{WARMUP_CYCLES} warm-up cycles not counted"
    )
    spool = SpoolSettings()
    print(
        f"    spooling included: the agent commits every batch to its SQLite spool (WAL, synchronous=FULL) in "
        f"the temporary folder before publishing it; commit_interval_s {spool.commit_interval_s:g} as "
        f"configured (the default), max_inflight {spool.max_inflight}"
    )
    print_cpu(cpu)
    print("    goals: <= 1 ms per meter-poll (existing Python agents: 2-7 ms), <= 40 MB RSS (they: 27-66 MB)")
    print(
        f"\n4. unit {args.dead_unit} dead (never answers); the other {METERS - 1} meters' complete "
        f"readings, timeout {args.timeout:g} s and {RETRIES} retry for both pollers"
    )
    print(
        f"{'':<4}{'poller':<30}{'window':<9}{'s':>5}{'updates':>9}{'min':>6}{'every s':>9}{'max gap':>9}{'<=1.5 s':>9}{'none':>6}"
    )
    for name, seen in updates:
        print_updates(name, seen, dead, args.fault_seconds)
    print("    updates: mean per live meter in the window (min: the worst meter); every s: window / updates;")
    print("    max gap and <=1.5 s: over intervals between a meter's reading timestamps; none: live meters")
    print("    without a single complete reading in the window; goal: every 1 s")


def main() -> None:
    if sys.argv[1:2] == [AGENT_CHILD]:
        agent_child(Path(sys.argv[2]), sys.argv[3:])
        return
    if sys.argv[1:2] == [NAIVE_CHILD]:
        spec = json.loads(sys.argv[2])
        spec["registers"] = [tuple(r) for r in spec["registers"]]
        asyncio.run(naive_poller(NaiveSpec(**spec)))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20, help="measured poll cycles per poller (default 20)")
    parser.add_argument(
        "--fault-seconds", type=float, default=30, help="seconds watched with a dead meter (default 30)"
    )
    parser.add_argument("--dead-unit", type=int, default=16, choices=range(1, METERS + 1), metavar="1-32")
    parser.add_argument("--timeout", type=float, default=1.0, help="response timeout, both pollers (1 s)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print_plans()
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-") as tmp:
        asyncio.run(measure(Path(tmp), args))


if __name__ == "__main__":
    main()
