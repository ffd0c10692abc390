"""`kilowatch sim serve --scenario`: every bus of a scenario live, with its faults inside their windows.

The CLI runs as a real process read by mbpoll; the fault windows are checked in-process on a clock the
test steps, so no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from app.processes import Process, wait_until
from kilowatch.profiles import Table, load_builtin
from kilowatch.yamlconfig import load
from sim.clock import SimClock
from sim.generate import Run
from sim.live import Bus, scenario_buses
from sim.scenario import Scenario, load_scenario
from sim.server import SimServer
from tests.mbpoll import read_floats, read_floats_rtu

SDM630 = load_builtin("eastron-sdm630")
SERVING = re.compile(
    r"^serving (\d+) meters? \((\S+): eastron-sdm630, units ([\d,]+)\) on (.+)$", re.MULTILINE
)
ACTIVE_POWER, ENERGY = 0x0034, 0x0048


def serve(tmp_path: Path, *args: str) -> Process:
    return Process("sim", [sys.executable, "-m", "app", "sim", "serve", *args], tmp_path / "sim.log").start()


def announced(sim: Process, buses: int) -> dict[str, tuple[list[int], str]]:
    """{bus: (units, endpoint)} from the "serving" lines, once all `buses` are there."""
    wait_until(lambda: len(SERVING.findall(sim.log())) == buses or not sim.alive(), 60, "the 'serving' lines")
    assert sim.alive(), sim.log()
    return {
        bus: ([int(u) for u in units.split(",")], where)
        for _, bus, units, where in SERVING.findall(sim.log())
    }


@pytest.fixture
def process_stack() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        assert process.stop() == 0, process.log()  # SIGTERM: a clean exit, socat pairs released


@pytest.mark.services
def test_an_rtu_bus_is_served_on_a_pseudo_terminal_that_mbpoll_reads(
    tmp_path: Path, process_stack: list[Process]
) -> None:
    rtu_dir = tmp_path / "rtu"
    sim = serve(
        tmp_path,
        "--scenario",
        "office-lang-son",
        "--rtu-dir",
        str(rtu_dir),
        "--start",
        "2025-06-03T10:00:00+07:00",
    )
    process_stack.append(sim)
    line = rtu_dir / "so-cong-thuong.gw-1.rs485-1"
    assert announced(sim, 1) == {"so-cong-thuong/gw-1/rs485-1": ([1, 2, 3, 4], f"rtu {line} at 9600 8N1")}
    for unit in (1, 4):
        voltages = read_floats_rtu(str(line), unit, 0x0000, 3)
        assert all(200 < v < 240 for v in voltages), (unit, voltages)
    [main_w] = read_floats_rtu(str(line), 1, ACTIVE_POWER, 1)
    [cooling_w] = read_floats_rtu(str(line), 2, ACTIVE_POWER, 1)
    assert main_w > cooling_w > 1_000  # a Tuesday morning in June: the main meter carries the cooling


@pytest.mark.services
def test_speed_runs_the_energy_counters_about_n_times_faster(
    tmp_path: Path, process_stack: list[Process]
) -> None:
    speed = 600
    sim = serve(
        tmp_path,
        "--scenario",
        "factory-two-shifts",
        "--tcp",
        "127.0.0.1:0",
        "--speed",
        str(speed),
        "--start",
        "2025-04-15T09:00:00+07:00",
    )
    process_stack.append(sim)
    [(units, where)] = announced(sim, 1).values()
    assert units == [1, 2, 3, 4, 5, 6]
    port = int(where.rpartition(":")[2])

    def sample() -> tuple[float, float, float]:
        """(real seconds, kWh, W) of the main meter, the real time taken halfway through the reads."""
        before = time.monotonic()
        [kwh] = read_floats("127.0.0.1", port, 1, ENERGY, 1)
        [watts] = read_floats("127.0.0.1", port, 1, ACTIVE_POWER, 1)
        return (before + time.monotonic()) / 2, kwh, watts

    t0, kwh0, w0 = sample()
    time.sleep(3)
    t1, kwh1, w1 = sample()
    real_time_kwh = (w0 + w1) / 2 * (t1 - t0) / 3_600_000
    assert real_time_kwh > 0
    assert speed / 3 < (kwh1 - kwh0) / real_time_kwh < speed * 3  # generous: the load moves in 30 minutes


@pytest.mark.services
def test_every_bus_of_mixed_province_is_served(tmp_path: Path, process_stack: list[Process]) -> None:
    spec = load_scenario("mixed-province")
    buses = {(m.site_id, m.gateway, m.bus) for m in spec.meters}
    sim = serve(tmp_path, "--scenario", "mixed-province", "--tcp", "127.0.0.1:0")
    process_stack.append(sim)
    served = announced(sim, len(buses))
    assert sum(len(units) for units, _ in served.values()) == len(spec.meters) >= 200
    assert {where.split()[0] for _, where in served.values()} == {"tcp", "rtu-over-tcp"}
    units, where = served["xuong-01/gw/tcp"]
    port = int(where.rpartition(":")[2])
    for unit in (units[0], units[-1]):
        assert all(200 < v < 240 for v in read_floats("127.0.0.1", port, unit, 0x0000, 3))


class SteppedClock:
    """Real seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


WINDOWED = """
name: windows
seed: 3
start: 2025-06-02
sites:
  - id: office
    kind: office
    gateways:
      - id: gw
        buses:
          - id: tcp
            transport: tcp
            meters:
              - {id: main, profile: eastron-sdm630, unit: 1, model: office, role: main, rated_kw: 20}
              - {id: cooling, profile: eastron-sdm630, unit: 2, model: office, rated_kw: 30, parts: [cooling]}
anomalies:
  - {kind: silent, meter: office.cooling, day: 0, window: {from: "10:00", to: "11:00"}}
  - {kind: crc, meter: office.main, day: 0, window: {from: "10:30", to: "10:45"}}
  - {kind: counter_reset, meter: office.cooling, day: 0, window: {from: "12:00", to: "12:01"}}
"""


@pytest.fixture
def windowed(tmp_path: Path) -> Scenario:
    path = tmp_path / "windows.yaml"
    path.write_text(WINDOWED)
    return load(Scenario, path)


async def read_power(client: AsyncModbusTcpClient, unit: int) -> float | None:
    """The unit's active power, or None when it does not answer in time."""
    try:
        response = await client.read_input_registers(ACTIVE_POWER, count=2, device_id=unit)
    except ModbusIOException:
        return None
    if response.isError():
        return -float(response.exception_code)
    decoded = SDM630.decode_words({ACTIVE_POWER: list(response.registers)}, Table.INPUT)
    return decoded["active_power_w"]


async def test_faults_act_only_inside_their_windows(windowed: Scenario) -> None:
    real = SteppedClock()
    start = datetime.fromisoformat("2025-06-02T09:59:00+07:00")
    clock = SimClock(start, 60, monotonic=real)  # a simulated minute per stepped second
    [bus] = scenario_buses(windowed, start, 1, update_interval=1)
    async with SimServer(units=bus.units, clock=clock, port=0) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.3, retries=0)
        assert await client.connect()
        try:
            seen = []
            for minute in (0, 2, 40, 62, 120, 125):  # 09:59, 10:01, 10:39, 11:01, 11:59, 12:04
                real.seconds = minute
                seen.append((await read_power(client, 1), await read_power(client, 2)))
                assert client.connected or await client.connect()
        finally:
            client.close()
        cooling_kwh = sim.values(2)["energy_import_kwh"]
    main, cooling = zip(*seen, strict=True)
    assert [w is None for w in cooling] == [False, True, True, False, False, False]
    assert main[2] == -11  # the crc window on a TCP bus: the gateway answers "target failed to respond"
    assert all(w is not None and w > 0 for i, w in enumerate(main) if i != 2)
    assert cooling_kwh < 50  # reset to zero at noon, a few minutes' consumption since


def test_a_served_meter_shows_what_the_dataset_holds(windowed: Scenario) -> None:
    """Same keys, same epoch, same update interval: `serve` and `generate` show one meter."""
    run = Run(windowed, start=date(2025, 6, 2), days=1, interval_s=60)
    batch = next(b for i, b in enumerate(run.batches("office", "gw")) if i == 9 * 60)  # 09:00
    reading = next(r for r in json.loads(batch)["readings"] if r["meter"] == "office.main")
    real = SteppedClock()
    clock = SimClock(run.begin, 60, monotonic=real)
    [bus] = scenario_buses(windowed, run.begin, 1, update_interval=60)
    real.seconds = 9 * 60
    shown = bus.units[1].meter.read(clock.now())
    assert {q: round(shown[q], 4) for q in reading["values"]} == reading["values"]
    assert clock.now() - run.begin == timedelta(hours=9)


def test_buses_are_grouped_as_the_scenario_wires_them() -> None:
    spec = load_scenario("mixed-province")
    buses: list[Bus] = scenario_buses(spec, datetime.fromisoformat("2025-05-05T00:00:00+07:00"), 7, 1)
    assert len(buses) == len({(m.site_id, m.gateway, m.bus) for m in spec.meters})
    assert sum(len(b.units) for b in buses) == len(spec.meters)
    assert {b.transport for b in buses} == {"tcp", "rtu"}


def test_scenario_units_refuse_a_profile_beside_them(windowed: Scenario) -> None:
    [bus] = scenario_buses(windowed, datetime.fromisoformat("2025-06-02T00:00:00+07:00"), 1, 1)
    with pytest.raises(ValueError, match="each Unit brings its profile and faults"):
        SimServer(units=bus.units, profile=SDM630)
