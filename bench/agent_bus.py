"""Agent bus benchmark: 32 SDM630-class meters polled every second, the agent beside a naive poller.

Run from the repository root: ``.venv/bin/python bench/agent_bus.py [--cycles 20] [--fault-seconds 30]``;
``--only rss`` (or any of cpu, rss, faults, recovery) makes only those measurements of 3-5.

Every figure is printed beside a baseline measured in the same run, never asserted:

1. requests and registers per cycle: the agent's plan (``agent.planner.plan``) vs one request per quantity;
2. estimated RTU bus time per cycle at 9600 8N1 (``agent.bus_time``): the agent's plan vs the best plan
   found by trying every way to split the registers into requests (independent of the planner's dynamic
   programming) vs one request per quantity;
3. CPU per meter-poll (spooling and publishing included), RSS (after imports, and the peak while
   running) and bytes per reading on the wire of the real agent (``kilowatch agent run`` in a child
   process, its SQLite spool file in the benchmark's temporary folder), reading all 31 quantities of the
   SDM630 and, through ``quantities:`` in its agent.yaml, the 11 the issue lists, vs a naive poller
   (pymodbus, one request per quantity, one MQTT message per meter, nothing on disk) reading those 11; all
   read one ``kilowatch sim serve`` process (units 1-32, Modbus TCP on loopback) and publish to a real
   Mosquitto; CPU comes from /proc/<pid>/stat between two cycles after a warm-up, so start-up is not
   counted, and the simulator's CPU never is;
3b. RSS with more meters (``--rss-meters``, 32 and 200 by default): the agent reading all 31 quantities of
   each meter on buses of 32 meters (each bus its own connection to one simulator serving them all), vs the
   naive poller reading 11 quantities of the same meters, each after a warm-up; and the RSS of a process
   that only imports what the agent runs;
4. with one meter dead, then eight (``--fault N:dead``, from the start), how often the live meters
   update, read from the readings topics, for both pollers with the same timeout and retries;
5. recovery after a broker restart (``--restarts`` times, ``--outage-seconds`` each): seconds from the
   broker listening again to the agent's online status (its first message of the new session), and the
   readings of the outage delivered afterwards; the naive poller has no reconnection.

The naive poller imports no kilowatch code, so its RSS is that of a small pymodbus script. The machine may
be shared: CPU figures are comparable within one run, not across machines.
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
BUS_METERS = 32
"""Meters per bus (one connection each) when the agent reads more than METERS."""
RSS_WARMUP_S = 10.0
"""Seconds of polling before the RSS figures of 3b are taken."""
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
NAIVE_CHILD = "_naive"


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


def agent_files_name(quantities: Sequence[str] | None, meters: int) -> str:
    """What names an agent run's config and spool files."""
    name = "all" if quantities is None else f"{len(quantities)}"
    return name if meters == METERS else f"{name}-{meters}-meters"


def write_agent_config(
    work: Path,
    broker: Mosquitto,
    modbus_port: int,
    timeout_s: float,
    quantities: Sequence[str] | None,
    meters: int = METERS,
) -> Path:
    """An agent.yaml polling the simulator's first `meters` SDM630s, BUS_METERS per bus (all their
    quantities, or `quantities`)."""
    import yaml

    name = agent_files_name(quantities, meters)
    buses: list[dict[str, object]] = []
    for first in range(1, meters + 1, BUS_METERS):
        bus: dict[str, object] = {
            "name": "sim" if first == 1 else f"sim-{first}",
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": modbus_port,
            "timing": {"timeout_s": timeout_s, "retries": RETRIES},
            "meters": [
                {"id": meter_id(u), "profile": "eastron-sdm630", "unit": u}
                for u in range(first, min(first + BUS_METERS, meters + 1))
            ],
        }
        if quantities is not None:
            bus["quantities"] = list(quantities)
        buses.append(bus)
    config = {
        "site": SITE,
        "gateway": GATEWAY,
        "poll_interval_s": 1,
        "mqtt": {"host": broker.host, "port": broker.port},
        "spool": {"path": str(work / f"agent-spool-{name}.db")},
        "buses": buses,
    }
    path = work / f"agent-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- 3, 4 and 5: measuring a running poller -------------------------------------------------------------

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
    quantities: int
    spool: Path | None = None
    """Deleted before each start, so no measurement replays another's backlog."""

    def start(self, log: Path) -> Process:
        if self.spool is not None:
            for part in (self.spool, *(self.spool.with_name(self.spool.name + s) for s in ("-wal", "-shm"))):
                part.unlink(missing_ok=True)
        return Process(self.name, self.command, log).start()


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


def rss_mb(pid: int | str, field: str = "VmHWM") -> float:
    """A memory figure of /proc/<pid>/status in MiB: VmHWM the peak RSS, VmRSS the current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


@contextlib.asynccontextmanager
async def running(broker: Mosquitto, arm: Arm, log: Path) -> AsyncIterator[tuple[int, Messages]]:
    """Subscribe to the arm's topic, then start it; yields its pid and what it publishes."""
    import aiomqtt

    async with aiomqtt.Client(broker.host, broker.port, identifier=f"bench-watch-{arm.name}") as client:
        await client.subscribe(arm.topic, qos=1)
        child = arm.start(log)
        assert child.proc is not None
        try:
            yield child.proc.pid, Messages(client, arm, child)
        finally:
            child.stop()


class Messages:
    """A poller's messages, parsed, with the time each arrived and its size."""

    def __init__(self, client: aiomqtt.Client, arm: Arm, child: Process) -> None:
        self._messages = aiter(client.messages)
        self._arm = arm
        self._child = child

    async def next(self, within_s: float = STALL_S) -> tuple[list[Seen], bool, float, int]:
        """The next message's readings, whether it ends a cycle, its arrival and its bytes; TimeoutError
        if none comes within `within_s` (a RuntimeError quoting the poller's log after STALL_S)."""
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
        return seen, cycle_end, time.monotonic(), len(message.payload)


@dataclass(frozen=True)
class CpuFigures:
    cpu_s: float
    polls: int
    rss_mb: float
    peak_rss_mb: float
    bytes: int
    """Payload bytes of the measured cycles' messages."""
    readings: int
    incomplete: int
    """Readings in the measured cycles that lacked a quantity (should be 0: no meter is faulty)."""


async def measure_cpu(broker: Mosquitto, arm: Arm, log: Path, cycles: int) -> CpuFigures:
    """CPU between the end of the warm-up cycles and `cycles` cycles later."""
    async with running(broker, arm, log) as (pid, messages):
        ended = incomplete = size = readings = 0
        cpu0 = 0.0
        while ended < WARMUP_CYCLES + cycles:
            seen, cycle_end, _, length = await messages.next()
            if ended >= WARMUP_CYCLES:
                incomplete += sum(not good for _, _, good in seen)
                size += length
                readings += len(seen)
            ended += cycle_end
            if cycle_end and ended == WARMUP_CYCLES:
                cpu0 = cpu_seconds(pid)
        return CpuFigures(
            cpu_s=cpu_seconds(pid) - cpu0,
            polls=cycles * METERS,
            rss_mb=rss_mb(pid, "VmRSS"),
            peak_rss_mb=rss_mb(pid),
            bytes=size,
            readings=readings,
            incomplete=incomplete,
        )


async def watch_updates(broker: Mosquitto, arm: Arm, log: Path, seconds: float) -> list[tuple[float, Seen]]:
    """Every reading published during `seconds` from the first one, with its arrival time."""
    async with running(broker, arm, log) as (_, messages):
        seen, _, first, _ = await messages.next()
        out = [(first, s) for s in seen]
        while (left := first + seconds - time.monotonic()) > 0:
            try:
                seen, _, arrived, _ = await messages.next(within_s=left)
            except TimeoutError:
                break
            out.extend((arrived, s) for s in seen)
        return out


@dataclass(frozen=True)
class MemoryFigures:
    meters: int
    rss_mb: float
    peak_rss_mb: float
    update_rate: float
    """Readings per meter per second after the warm-up (1.0: every meter every second)."""


async def measure_memory(
    broker: Mosquitto, arm: Arm, log: Path, meters: int, seconds: float
) -> MemoryFigures:
    """RSS after RSS_WARMUP_S of polling, then `seconds` more; and how often each meter was read meanwhile."""
    async with running(broker, arm, log) as (pid, messages):
        await messages.next()
        counted_from = time.monotonic() + RSS_WARMUP_S
        readings = 0
        while (left := counted_from + seconds - time.monotonic()) > 0:
            try:
                seen, _, arrived, _ = await messages.next(within_s=left)
            except TimeoutError:
                break
            readings += len(seen) if arrived >= counted_from else 0
        return MemoryFigures(meters, rss_mb(pid, "VmRSS"), rss_mb(pid), readings / meters / seconds)


def print_memory(rows: list[tuple[Arm, MemoryFigures]], imports: dict[str, float]) -> None:
    print(f"{'':<4}{'poller':<44}{'meters':>7}{'per s':>7}{'import MB':>10}{'RSS MB':>8}{'peak MB':>8}")
    for arm, f in rows:
        print(
            f"{'':<4}{arm.name:<44}{f.meters:>7}{f.update_rate:>7.2f}{imports[arm.name.split(':')[0]]:>10.1f}"
            f"{f.rss_mb:>8.1f}{f.peak_rss_mb:>8.1f}"
        )


def print_cpu(rows: list[tuple[Arm, CpuFigures]], imports: dict[str, float]) -> None:
    print(
        f"{'':<4}{'poller':<44}{'cycles':>7}{'CPU s':>7}{'ms/meter-poll':>14}{'import MB':>10}{'RSS MB':>8}"
        f"{'peak MB':>8}{'B/reading':>10}{'B/value':>8}{'incomplete':>11}"
    )
    for arm, f in rows:
        print(
            f"{'':<4}{arm.name:<44}{f.polls // METERS:>7}{f.cpu_s:>7.2f}{f.cpu_s / f.polls * 1000:>14.3f}"
            f"{imports[arm.name.split(':')[0]]:>10.1f}{f.rss_mb:>8.1f}{f.peak_rss_mb:>8.1f}"
            f"{f.bytes / f.readings:>10.0f}{f.bytes / f.readings / arm.quantities:>8.1f}{f.incomplete:>11}"
        )


def print_updates(name: str, updates: list[tuple[float, Seen]], dead: set[str], seconds: float) -> None:
    """Per live meter: updates (complete readings) in the window and the intervals between them, for the
    whole window and for its second half (once the agent's breakers have had time to open)."""
    start = min(arrived for arrived, _ in updates)
    for label, since in (("whole", start), ("2nd half", start + seconds / 2)):
        span = start + seconds - since
        stamps: dict[str, list[int]] = defaultdict(list)
        for arrived, (meter, ts, good) in updates:
            if meter not in dead and good and arrived >= since:
                stamps[meter].append(ts)
        counts = [len(stamps[meter_id(u)]) for u in range(1, METERS + 1) if meter_id(u) not in dead]
        gaps = [(b - a) / 1000 for ts in stamps.values() for a, b in itertools.pairwise(sorted(ts))]
        mean = statistics.fmean(counts)
        rate = f"{mean / span:.2f}"
        longest = f"{max(gaps):.1f}" if gaps else f">{span:.0f}"
        within = f"{sum(g <= 1.5 for g in gaps) / len(gaps):.0%}" if gaps else "-"
        starved = sum(c == 0 for c in counts)
        print(
            f"{'':<4}{name:<28}{len(dead):>5}  {label:<10}{span:>5.0f}{mean:>9.1f}{rate:>8}{min(counts):>6}"
            f"{longest:>9}{within:>9}{starved:>6}"
        )


@dataclass(frozen=True)
class Recovery:
    back_s: list[float | None]
    """Per restart: seconds from the broker listening again to the poller's first message."""
    outage_readings: list[tuple[int, int]]
    """Per restart: readings of one meter stamped during the outage that arrived, and cycles it lasted."""


async def measure_recovery(
    broker: Mosquitto, arm: Arm, log: Path, outage_s: float, restarts: int
) -> Recovery:
    """Restart the broker `restarts` times under a running poller; how soon it is back each time."""
    import aiomqtt

    from kilowatch.mqtt_contract import Channel, GatewayState, GatewayStatus, topic

    status_topic = topic(SITE, GATEWAY, Channel.STATUS)
    child = arm.start(log)
    back: list[float | None] = []
    delivered: list[tuple[int, int]] = []
    try:
        for _ in range(restarts):
            await asyncio.sleep(5)  # polling and publishing
            broker.stop()
            stopped = time.time()
            await asyncio.sleep(outage_s)
            await asyncio.to_thread(broker.restart)
            listening = time.time()
            first: float | None = None
            stamps: set[int] = set()
            async with aiomqtt.Client(
                broker.host, broker.port, identifier=f"bench-recovery-{arm.name}"
            ) as client:
                await client.subscribe(arm.topic, qos=1)
                await client.subscribe(status_topic, qos=1)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(outage_s + 20):
                        async for message in client.messages:
                            assert isinstance(message.payload, bytes | bytearray)
                            if str(message.topic) == status_topic:
                                status = GatewayStatus.model_validate_json(message.payload)
                                if status.state is GatewayState.ONLINE and first is None:
                                    first = status.ts / 1000 - listening
                                continue
                            if first is None:  # the naive poller has no status: its first reading
                                first = time.time() - listening
                            for meter, ts, _ in arm.parse(bytes(message.payload))[0]:
                                if meter == meter_id(1) and stopped * 1000 <= ts <= listening * 1000:
                                    stamps.add(ts)
                            if first is not None and len(stamps) >= int(listening - stopped):
                                break
            back.append(first)
            delivered.append((len(stamps), int(listening - stopped)))
            if not child.alive():
                break
    finally:
        child.stop()
    return Recovery(back, delivered)


def print_recovery(name: str, figures: Recovery) -> None:
    known = [b for b in figures.back_s if b is not None]
    each = ", ".join("never" if b is None else f"{b:.1f}" for b in figures.back_s)
    median = f"{statistics.median(known):.1f}" if len(known) == len(figures.back_s) else "-"
    outage = ", ".join(f"{got}/{cycles}" for got, cycles in figures.outage_readings)
    print(f"{'':<4}{name:<44}{each:<24}{median:>8}   {outage}")


IMPORTS = {
    "agent": "import agent.__main__, aiomqtt",
    "naive": "import asyncio, json, struct, aiomqtt, pymodbus.client",
}
"""What each poller imports to run (the agent: ``python -m agent``, which `kilowatch agent run` execs, and its
MQTT client)."""


def import_rss(kind: str) -> float:
    """Peak RSS of a child that only imports what the agent (or the naive poller) needs to run."""
    import subprocess

    # VmHWM, not ru_maxrss: that one counts the bench's own memory, copied into the child before exec
    code = f"{IMPORTS[kind]}\nfrom pathlib import Path\nprint(Path('/proc/self/status').read_text())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


# --- the run --------------------------------------------------------------------------------------------


def start_sim(work: Path, name: str, port: int, fault: list[str], meters: int = METERS) -> Process:
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
            f"1-{meters}",
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


def arms(
    work: Path, broker: Mosquitto, modbus_port: int, timeout_s: float, meters: int = METERS
) -> tuple[Arm, Arm, Arm]:
    """The agent with all quantities and with the issue's 11, and the naive poller, reading `meters`."""
    from kilowatch.mqtt_contract import Channel, topic
    from kilowatch.profiles import load_builtin

    profile = bench_profile()
    spec = NaiveSpec(
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        units=list(range(1, meters + 1)),
        registers=[(r.quantity, r.address) for r in profile.registers],
        timeout_s=timeout_s,
        retries=RETRIES,
    )
    here = str(Path(__file__).resolve())
    readings = topic(SITE, GATEWAY, Channel.READINGS)

    def agent(quantities: Sequence[str] | None) -> Arm:
        config = write_agent_config(work, broker, modbus_port, timeout_s, quantities, meters)
        count = len(load_builtin("eastron-sdm630").registers) if quantities is None else len(quantities)
        command = [
            sys.executable,
            "-m",
            "app",
            "agent",
            "run",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ]
        spool = work / f"agent-spool-{agent_files_name(quantities, meters)}.db"
        return Arm(
            f"agent: kilowatch agent run, {count} quantities", command, readings, parse_agent, count, spool
        )

    naive = Arm(
        f"naive: pymodbus+paho, {len(CORE_QUANTITIES)} quantities",
        [sys.executable, here, NAIVE_CHILD, json.dumps(asdict(spec))],
        f"{NAIVE_ROOT}/+",
        parse_naive,
        len(CORE_QUANTITIES),
    )
    return agent(None), agent(CORE_QUANTITIES), naive


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


PARTS = ("cpu", "rss", "faults", "recovery")
"""The measurements of a running poller, by --only name: 3, 3b, 4 and 5."""

EIGHT_DEAD = tuple(range(4, METERS + 1, 4))
"""Units dead from the start in the eight-dead scenario, spread over the bus."""


async def measure(work: Path, args: argparse.Namespace) -> None:
    check_profile_fits_naive()
    parts = set(args.only)
    broker = Mosquitto.start(work / "mosquitto")
    try:
        port = free_port()
        agent_all, agent_core, naive = arms(work, broker, port, args.timeout)
        imports = {"agent": import_rss("agent"), "naive": import_rss("naive")}
        cpu: list[tuple[Arm, CpuFigures]] = []
        recovery: list[tuple[Arm, Recovery]] = []
        if {"cpu", "recovery"} & parts:
            sim = start_sim(work, "sim", port, [])
            try:
                if "cpu" in parts:
                    cpu = [
                        (arm, await measure_cpu(broker, arm, work / f"cpu-{i}.log", args.cycles))
                        for i, arm in enumerate((agent_all, agent_core, naive))
                    ]
                if "recovery" in parts:
                    recovery = [
                        (
                            arm,
                            await measure_recovery(
                                broker, arm, work / f"recovery-{i}.log", args.outage_seconds, restarts
                            ),
                        )
                        for i, (arm, restarts) in enumerate(((agent_all, args.restarts), (naive, 1)))
                    ]
            finally:
                sim.stop()
        updates = []
        for units in ((args.dead_unit,), EIGHT_DEAD) if "faults" in parts else ():
            faults = [f"--fault={unit}:dead" for unit in units]
            sim = start_sim(work, f"sim-{len(units)}-dead", port, faults)
            try:
                for i, arm in enumerate((agent_all, naive)):
                    log = work / f"fault-{len(units)}-{i}.log"
                    seen = await watch_updates(broker, arm, log, args.fault_seconds)
                    updates.append((arm, {meter_id(u) for u in units}, seen))
            finally:
                sim.stop()
        memory = []
        for meters in args.rss_meters if "rss" in parts else ():
            sim = start_sim(work, f"sim-{meters}-meters", port, [], meters)
            try:
                agent_n, _, naive_n = arms(work, broker, port, args.timeout, meters)
                for i, arm in enumerate((agent_n, naive_n)):
                    log = work / f"rss-{meters}-{i}.log"
                    memory.append((arm, await measure_memory(broker, arm, log, meters, args.rss_seconds)))
            finally:
                sim.stop()
    finally:
        broker.stop()
    if cpu:
        print(
            f"\n3. CPU per meter-poll including spooling and publishing (QoS 1 to Mosquitto), RSS and bytes per "
            f"reading, {METERS} healthy meters every second over Modbus TCP (simulator in its own process, not "
            f"counted); {WARMUP_CYCLES} warm-up cycles not counted"
        )
        print_cpu(cpu, imports)
        print(
            "    import MB: peak RSS of a process that only imports what the poller runs (agent: agent.__main__, "
            "which `kilowatch agent run` execs, and aiomqtt; naive: pymodbus, aiomqtt); RSS MB: at the end, "
            "peak MB: highest while running"
        )
        print("    B/reading: payload bytes per meter reading on the wire (B/value: per quantity)")
        print("    goals: <= 1 ms per meter-poll, <= 40 MB RSS with 32 meters")
    if memory:
        print(
            f"\n3b. RSS by meter count: the agent's buses have {BUS_METERS} meters each (one connection each), the "
            f"naive poller one connection; after {RSS_WARMUP_S:g} s of polling and {args.rss_seconds:g} s more"
        )
        print_memory(memory, imports)
        print(
            "    per s: readings per meter per second in those last seconds (1.00: every meter every second)"
        )
        print("    goals: <= 40 MB RSS with 32 meters, <= 45 MB with 200")
    if updates:
        print(
            f"\n4. dead meters (never answering, from the start): units {args.dead_unit}, then "
            f"{','.join(map(str, EIGHT_DEAD))}; the live meters' complete readings, timeout {args.timeout:g} s "
            f"and {RETRIES} retry for both pollers"
        )
        print(
            f"{'':<4}{'poller':<28}{'dead':>5}  {'window':<10}{'s':>5}{'updates':>9}{'per s':>8}{'min':>6}"
            f"{'max gap':>9}{'<=1.5 s':>9}{'none':>6}"
        )
        for arm, dead_ids, seen in updates:
            print_updates(arm.name.split(",")[0], seen, dead_ids, args.fault_seconds)
        print(
            "    updates: mean per live meter in the window (min: the worst meter); per s: updates / window;"
        )
        print(
            "    max gap and <=1.5 s: over intervals between a meter's reading timestamps; none: live meters"
        )
        print("    without a single complete reading in the window; goal: >= 0.95 per s with 8 dead")
    if recovery:
        print(
            f"\n5. broker restart: down {args.outage_seconds:g} s, then back on the same port; seconds from it "
            f"listening again to the poller's first message (agent: its online status)"
        )
        print(f"{'':<4}{'poller':<44}{'each restart, s':<24}{'median':>8}   outage readings of m01 delivered")
        for arm, figures in recovery:
            print_recovery(arm.name, figures)
        print("    goal: median <= 5 s, nothing lost; the naive poller exits when its broker goes away")


def main() -> None:
    if sys.argv[1:2] == [NAIVE_CHILD]:
        spec = json.loads(sys.argv[2])
        spec["registers"] = [tuple(r) for r in spec["registers"]]
        asyncio.run(naive_poller(NaiveSpec(**spec)))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20, help="measured poll cycles per poller (default 20)")
    parser.add_argument(
        "--fault-seconds", type=float, default=30, help="seconds watched with dead meters (default 30)"
    )
    parser.add_argument("--dead-unit", type=int, default=16, choices=range(1, METERS + 1), metavar="1-32")
    parser.add_argument("--timeout", type=float, default=1.0, help="response timeout, both pollers (1 s)")
    parser.add_argument("--outage-seconds", type=float, default=15, help="broker down per restart (15 s)")
    parser.add_argument("--restarts", type=int, default=3, help="broker restarts under the agent (3)")
    parser.add_argument(
        "--rss-meters",
        type=int,
        nargs="+",
        default=[METERS, 200],
        choices=range(1, 248),
        metavar="1-247",
        help=f"meter counts whose RSS 3b measures ({METERS} 200)",
    )
    parser.add_argument(
        "--rss-seconds", type=float, default=10, help="seconds measured after the warm-up in 3b (10 s)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=list(PARTS),
        choices=PARTS,
        help="the measurements of a running poller to make (default all: " + " ".join(PARTS) + ")",
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print_plans()
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-") as tmp:
        asyncio.run(measure(Path(tmp), args))


if __name__ == "__main__":
    main()
