"""The bus worker with in-memory meters: one request on the bus at a time, retries, pauses, breakers, and
logs that follow state changes rather than cycles."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from agent import bus_worker
from agent.breaker import BreakerState
from agent.bus_worker import PROBE_FLOOR, STARVED_CYCLES, BusWorker, MeterSlot, next_tick, probe_timing
from agent.config import BUILT_IN_TIMING, EffectiveTiming
from agent.errors import BusUnavailable, CrcError, ModbusExceptionResponse
from agent.planner import plan
from agent.transport import MemoryReader
from kilowatch.mqtt_contract import ClockState, Quality
from kilowatch.profiles import Table, load_builtin
from tests.agent_support import full_map

SDM = load_builtin("eastron-sdm630")
REQUESTS = len(plan(SDM))
FAST = EffectiveTiming(timeout_s=0.1, retries=1, pause_after_connect_s=0, pause_between_requests_s=0)


def slot(meter_id: str, unit: int, timing: EffectiveTiming = FAST) -> MeterSlot:
    return MeterSlot(id=meter_id, unit=unit, profile=SDM, timing=timing, requests=plan(SDM))


def asked(reader: MemoryReader, unit: int) -> int:
    return sum(1 for request in reader.requests if request[3] == unit)


def test_ticks_are_aligned_to_the_interval() -> None:
    assert next_tick(1_700_000_003.2, 10) == 1_700_000_010
    assert next_tick(1_700_000_010.0, 10) == 1_700_000_020
    assert next_tick(12.34, 0.5) == 12.5


async def test_a_dead_meter_is_logged_once_then_skipped_while_the_others_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    values, words = full_map(SDM)
    reader = MemoryReader({1: words, 3: words})
    worker = BusWorker(name="rs485", reader=reader, meters=[slot("a", 1), slot("dead", 2), slot("c", 3)])
    cycles = [await worker.cycle(ClockState.SYNCED) for _ in range(10)]
    for a, dead, c in cycles:
        assert (a.meter, a.values, a.quality, c.values, c.quality) == (
            "a",
            values,
            Quality.GOOD,
            values,
            Quality.GOOD,
        )
        assert (dead.values, dead.quality, dead.value_quality) == ({}, Quality.ERROR, {})
    assert asked(reader, 1) == asked(reader, 3) == 10 * REQUESTS
    # Threshold 3: asked in cycles 1-3, probed after skipping 1 then 2 cycles: cycles 5 and 8; retried
    # only the first time (then it is a suspect).
    assert asked(reader, 2) == FAST.retries + 1 + 4
    assert worker.meters[1].breaker.state is BreakerState.OPEN
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "meter dead: bus 'memory' unit 2: no answer reading register 0x0000",
        "meter dead: not answering for 3 polls; skipped for a growing number of cycles (up to 2) between probes",
    ]

    reader.units[2] = words  # the meter is repaired; its next probe closes the breaker
    for _ in range(8):
        *_, (_, dead, _) = [await worker.cycle(ClockState.SYNCED)]
    assert dead.quality is Quality.GOOD
    assert "meter dead: answering again; polled every cycle" in caplog.text
    assert "meter dead: reads cleanly again" in caplog.text


class Flaky(MemoryReader):
    """Garbles the first `bad` answers (noise on the line), and counts requests in flight at once."""

    def __init__(self, bad: int) -> None:
        _, words = full_map(SDM)
        super().__init__({1: words, 2: words})
        self.bad = bad
        self.in_flight = self.most_in_flight = 0
        self.started: list[tuple[float, int]] = []
        """When each attempt started, and to which unit."""

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.started.append((time.monotonic(), unit))
        try:
            await asyncio.sleep(0.001)
            if self.bad:
                self.bad -= 1
                raise CrcError(self.bus, unit, address, b"\x00\xff")
            return await super().read(table, address, count, unit)
        finally:
            self.in_flight -= 1


async def test_garbled_answers_are_retried_per_meter_but_exceptions_are_not() -> None:
    reader = Flaky(bad=1)
    worker = BusWorker(name="b", reader=reader, meters=[slot("a", 1)])
    [reading] = await worker.cycle(ClockState.SYNCED)
    assert reading.quality is Quality.GOOD
    assert len(reader.started) == REQUESTS + 1
    no_retry = EffectiveTiming(timeout_s=0.1, retries=0, pause_after_connect_s=0, pause_between_requests_s=0)
    reader.bad = 1
    with pytest.raises(CrcError):
        await worker.channel(no_retry).read(Table.INPUT, 0, 2, 1)
    asked_before = len(reader.requests)
    with pytest.raises(ModbusExceptionResponse):
        await worker.channel(BUILT_IN_TIMING).read(Table.INPUT, 0x24, 2, 1)  # a gap: exception 2
    assert len(reader.requests) == asked_before + 1


async def test_one_request_on_the_bus_at_a_time_with_the_meters_pause() -> None:
    reader = Flaky(bad=3)
    paused = EffectiveTiming(timeout_s=0.1, retries=3, pause_after_connect_s=0, pause_between_requests_s=0.01)
    worker = BusWorker(name="b", reader=reader, meters=[slot("a", 1), slot("p", 2, paused)])
    ad_hoc = [worker.channel(FAST).read(Table.INPUT, 0, 2, 1) for _ in range(5)]
    await asyncio.gather(worker.cycle(ClockState.SYNCED), worker.cycle(ClockState.SYNCED), *ad_hoc)
    assert reader.most_in_flight == 1
    gaps = [t - reader.started[i - 1][0] for i, (t, unit) in enumerate(reader.started) if i and unit == 2]
    assert len(gaps) == 2 * REQUESTS
    assert min(gaps) >= 0.0095  # the bus kept quiet before every request to the meter that needs it


async def test_a_lost_bus_is_not_blamed_on_the_meters(caplog: pytest.LogCaptureFixture) -> None:
    class Unplugged(MemoryReader):
        async def read(
            self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
        ) -> list[int]:
            self.requests.append((table, address, count, unit))
            raise BusUnavailable("rs485", "/dev/ttyUSB0: no such serial port")

    reader = Unplugged({})
    worker = BusWorker(name="rs485", reader=reader, meters=[slot("a", 1), slot("b", 2)])
    for _ in range(5):
        a, b = await worker.cycle(ClockState.SYNCED)
    assert (len(reader.requests), a.quality, b.quality) == (5, Quality.ERROR, Quality.ERROR)
    assert all(s.breaker.state is BreakerState.CLOSED for s in worker.meters)
    assert caplog.text.count("unavailable") == 1
    assert worker.down == "/dev/ttyUSB0: no such serial port"


async def test_a_summary_names_the_troubled_meters(caplog: pytest.LogCaptureFixture) -> None:
    _, words = full_map(SDM)
    worker = BusWorker(
        name="b", reader=MemoryReader({1: words}), meters=[slot("a", 1), slot("gone", 2)], summary_every_s=0
    )
    for _ in range(4):
        await worker.cycle(ClockState.SYNCED)
    assert "bus b, last 0 s: gone: 0 of 0 polls clean, 1 skipped (breaker open)" in caplog.text


class Patience(MemoryReader):
    """Records the timeout the worker allowed for each request, by unit, in order."""

    def __init__(self, units: dict[int, dict[tuple[Table, int], int]]) -> None:
        super().__init__(units)
        self.timeouts: list[tuple[int, float | None]] = []

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        self.timeouts.append((unit, timeout_s))
        return await super().read(table, address, count, unit)


async def test_a_suspect_goes_last_once_and_within_the_tick() -> None:
    _, words = full_map(SDM)
    reader = Patience({1: words, 3: words})
    patient = EffectiveTiming(timeout_s=10, retries=1, pause_after_connect_s=0, pause_between_requests_s=0)
    worker = BusWorker(name="b", reader=reader, meters=[slot("dead", 2, patient), slot("a", 1), slot("c", 3)])
    await worker.cycle(ClockState.SYNCED, deadline=time.monotonic() + 20)
    assert [unit for unit, _ in reader.timeouts][:2] == [2, 2]  # not a suspect yet: first, and retried
    reader.timeouts.clear()
    dead, a, c = await worker.cycle(ClockState.SYNCED, deadline=time.monotonic() + 8)
    assert [r.meter for r in (dead, a, c)] == ["dead", "a", "c"]  # readings keep the configured order
    assert [unit for unit, _ in reader.timeouts] == [1] * REQUESTS + [3] * REQUESTS + [2]
    assert reader.timeouts[0][1] == FAST.timeout_s
    last = reader.timeouts[-1][1]
    assert last is not None
    assert 5 <= last < 8


def test_probes_share_the_time_left_and_wait_when_it_runs_out() -> None:
    slow = EffectiveTiming(timeout_s=1.0, retries=2, pause_after_connect_s=0, pause_between_requests_s=0)
    assert probe_timing(slow, 5, 1) == slow
    assert probe_timing(slow, 0.8, 2) == replace(slow, timeout_s=0.4)  # an equal share each
    assert probe_timing(slow, 0.8, 8) == replace(slow, timeout_s=PROBE_FLOOR)  # at least the floor
    assert probe_timing(slow, 0.2, 1) is None  # under the floor: next cycle
    assert probe_timing(slow, -1.0, 1) is None  # the cycle already overran its tick
    assert probe_timing(slow, 0.1, 3, first=True) == replace(slow, timeout_s=PROBE_FLOOR)  # one per cycle
    assert probe_timing(slow, -1.0, 3, starved=True) == slow


class Silence(MemoryReader):
    """Meters on a simulated clock: an answer takes 2 ms, silence the whole timeout allowed."""

    def __init__(self, units: dict[int, dict[tuple[Table, int], int]]) -> None:
        super().__init__(units)
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        self.now += (timeout_s or 0) if unit not in self.units else 0.002
        return await super().read(table, address, count, unit)


async def test_eight_dead_meters_cost_the_live_ones_no_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first cycle (where each dead meter costs its timeout and retry once), the probes of
    many dead meters fit in what is left of each one-second cycle, on the worker's own clock (simulated
    here); a revived meter is heard again within 5 cycles."""
    _, words = full_map(SDM)
    live, dead = range(1, 25), range(25, 33)
    reader = Silence({unit: words for unit in live})
    monkeypatch.setattr(bus_worker, "time", SimpleNamespace(monotonic=reader.monotonic, time=time.time))
    timing = EffectiveTiming(timeout_s=1.0, retries=1, pause_after_connect_s=0, pause_between_requests_s=0)
    worker = BusWorker(name="b", reader=reader, meters=[slot(f"m{u}", u, timing) for u in (*live, *dead)])
    await worker.cycle(ClockState.SYNCED, deadline=reader.now + 0.95)
    assert reader.now == pytest.approx(24 * REQUESTS * 0.002 + 8 * 2 * timing.timeout_s)
    probed: set[int] = set()
    for _ in range(30):
        started = reader.now
        readings = await worker.cycle(ClockState.SYNCED, deadline=started + 0.95)
        assert all(r.quality is Quality.GOOD for r in readings[:24])
        assert reader.now - started <= 0.95 + PROBE_FLOOR  # at worst the cycle's first probe's floor
        probed |= {unit for _, _, _, unit in reader.requests if unit in dead}
    assert probed == set(dead)
    assert max(s.waiting for s in worker.meters) < STARVED_CYCLES
    reader.units[32] = words
    for _ in range(5):
        started = reader.now
        readings = await worker.cycle(ClockState.SYNCED, deadline=started + 0.95)
        if readings[-1].quality is Quality.GOOD:
            break
    else:
        raise AssertionError("the revived meter was not heard within 5 cycles")
