"""Per-meter health: the counts, how the bus worker feeds them, the wire model and the metrics text."""

from __future__ import annotations

import contextlib
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from agent.breaker import BreakerState
from agent.bus_worker import BusWorker, MeterSlot
from agent.config import EffectiveTiming, MetricsSettings, MqttSettings
from agent.errors import (
    BusUnavailable,
    CrcError,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    WrongUnit,
)
from agent.health import PLAUSIBLE_AGAIN_POLLS, CounterReset, MeterStats
from agent.metrics_server import CONTENT_TYPE, escape_label_value, render, respond
from agent.planner import plan
from agent.poller import NOT_AVAILABLE, Poll
from agent.publisher import Publisher
from agent.runner import serve_metrics
from agent.transport import MemoryReader
from kilowatch.mqtt_contract import (
    ClockState,
    GatewayEventKind,
    GatewayState,
    GatewayStatus,
    MeterHealth,
    Quality,
)
from kilowatch.profiles import Table, load_builtin
from tests.agent_support import full_map, register_map

SDM = load_builtin("eastron-sdm630")
REQUESTS = len(plan(SDM))
NO_RETRY = EffectiveTiming(timeout_s=0.1, retries=0, pause_after_connect_s=0, pause_between_requests_s=0)
ONE_RETRY = EffectiveTiming(timeout_s=0.1, retries=1, pause_after_connect_s=0, pause_between_requests_s=0)


def slot(meter_id: str, unit: int, timing: EffectiveTiming = NO_RETRY) -> MeterSlot:
    return MeterSlot(id=meter_id, unit=unit, profile=SDM, timing=timing, requests=plan(SDM))


def test_each_failed_attempt_is_counted_by_cause_and_a_lost_bus_is_not() -> None:
    stats = MeterStats(since=5)
    for error in (
        ModbusTimeout("b", 1, 0),
        ModbusTimeout("b", 1, 0),
        CrcError("b", 1, 0, b"\x01"),
        WrongUnit("b", 1, 0, answered=2),
        MalformedResponse("b", 1, 0, "short"),
        ModbusExceptionResponse("b", 1, 0, code=4),
        ModbusExceptionResponse("b", 1, 0, code=2),
        ModbusExceptionResponse("b", 1, 0, code=2),
        BusUnavailable("b", "connection refused"),
    ):
        stats.record_error(error)
    health = stats.snapshot(bus="b", breaker=BreakerState.CLOSED)
    assert (health.timeouts, health.crc_errors, health.wrong_unit, health.malformed) == (2, 1, 1, 1)
    assert list(health.exceptions.items()) == [(2, 2), (4, 1)]
    assert (health.polls, health.success_rate, health.mean_latency_s, health.last_good_ts) == (
        0,
        None,
        None,
        None,
    )
    assert (health.since, health.bus, health.breaker) == (5, "b", "closed")


def test_polls_give_the_success_rate_latencies_and_last_good_time() -> None:
    stats = MeterStats(since=0)
    stats.record_poll(Poll(ts=1000, values={"frequency_hz": 50.0}), latency_s=0.1)
    sentinel = Poll(ts=2000, values={"frequency_hz": 50.0}, errors={"power_factor": NOT_AVAILABLE})
    stats.record_poll(sentinel, latency_s=0.2)  # the meter answered "not available": still a success
    timeout = ModbusTimeout("b", 1, 0)
    stats.record_poll(Poll(ts=3000, errors={"frequency_hz": str(timeout)}, failures=[timeout]), latency_s=0.6)
    stats.record_poll(Poll.unread(SDM, "internal error, see the agent's log"), latency_s=0.1)
    stats.record_skip()
    health = stats.snapshot(bus="b", breaker=BreakerState.OPEN)
    assert (health.polls, health.successes, health.success_rate, health.skipped) == (4, 2, 0.5, 1)
    assert health.last_latency_s == 0.1
    assert health.mean_latency_s == pytest.approx(0.25)
    assert (health.last_good_ts, health.breaker) == (2000, "open")


def test_a_counter_going_backwards_is_flagged_not_a_gauge_going_down() -> None:
    stats = MeterStats(since=0)
    first = stats.record_poll(
        Poll(ts=1, values={"energy_import_kwh": 812.5, "active_power_w": 900.0}), latency_s=0
    )
    same = stats.record_poll(
        Poll(ts=2, values={"energy_import_kwh": 812.5, "active_power_w": 10.0}), latency_s=0
    )
    silent = stats.record_poll(Poll(ts=3, errors={"energy_import_kwh": "no answer"}), latency_s=0)
    reset = stats.record_poll(Poll(ts=4, values={"energy_import_kwh": 0.25}), latency_s=0)
    assert (first, same, silent) == ([], [], [])
    assert reset == [CounterReset("energy_import_kwh", 812.5, 0.25)]
    assert stats.snapshot(bus="b", breaker=BreakerState.CLOSED).counter_resets == 1


async def test_the_worker_logs_a_replaced_meter(caplog: pytest.LogCaptureFixture) -> None:
    values, words = full_map(SDM)
    reader = MemoryReader({1: words})
    meter = MeterSlot(id="m1", unit=1, profile=SDM, timing=NO_RETRY, requests=plan(SDM))
    worker = BusWorker(name="b", reader=reader, meters=[meter])
    await worker.cycle(ClockState.SYNCED)
    new_values, reader.units[1] = full_map(SDM, base=-100.0)  # every value lower: a new meter
    [reading] = await worker.cycle(ClockState.SYNCED)
    assert reading.values == new_values  # the values are still reported as read
    counters = [
        "energy_import_kwh",
        "energy_export_kwh",
        "reactive_energy_import_kvarh",
        "reactive_energy_export_kvarh",
    ]
    for name in counters:
        assert f"meter m1: {name} went backwards, {values[name]:g} -> {new_values[name]:g}" in caplog.text
    assert "voltage_l1_v went backwards" not in caplog.text
    assert meter.health.counter_resets == len(counters)


class Garbling(MemoryReader):
    """Garbles the next `bad` answers, as noise on the line does."""

    def __init__(self, bad: int) -> None:
        _, words = full_map(SDM)
        super().__init__({1: words})
        self.bad = bad

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        if self.bad:
            self.bad -= 1
            raise CrcError(self.bus, unit, address, b"\x00\xff")
        return await super().read(table, address, count, unit)


async def test_the_bus_worker_counts_retried_attempts_skips_and_breakers() -> None:
    reader = Garbling(bad=1)
    reader.units[3] = reader.units[1]
    worker = BusWorker(
        name="rs485", reader=reader, meters=[slot("noisy", 1, ONE_RETRY), slot("dead", 2), slot("ok", 3)]
    )
    for _ in range(6):
        await worker.cycle(ClockState.SYNCED)
    noisy, dead, ok = (s.health.snapshot(bus="rs485", breaker=s.breaker.state) for s in worker.meters)
    # The garbled answer was repaired by a retry: the poll succeeded, and the CRC error still shows.
    assert (noisy.crc_errors, noisy.polls, noisy.successes) == (1, 6, 6)
    assert noisy.last_latency_s is not None
    assert noisy.last_good_ts is not None
    # Threshold 3: polled in cycles 1-3 (one timeout each, then the rest of the poll is skipped),
    # then skipped in cycle 4 and probed in cycle 5, then skipped again.
    assert (dead.timeouts, dead.polls, dead.successes, dead.skipped) == (4, 4, 0, 2)
    assert (dead.success_rate, dead.last_good_ts, dead.breaker) == (0.0, None, "open")
    assert (ok.polls, ok.successes, ok.timeouts, ok.crc_errors, ok.breaker) == (6, 6, 0, 0, "closed")


def health(**counts: object) -> MeterHealth:
    base: dict[str, object] = {
        "bus": "rs485",
        "since": 1,
        "polls": 10,
        "successes": 7,
        "success_rate": 0.7,
        "skipped": 2,
        "last_latency_s": 0.125,
        "mean_latency_s": 0.25,
        "timeouts": 3,
        "crc_errors": 1,
        "wrong_unit": 0,
        "malformed": 0,
        "exceptions": {2: 4},
        "last_good_ts": 1_795_828_800_250,
        "breaker": "closed",
    }
    return MeterHealth.model_validate(base | counts)


def test_the_status_carries_health_on_the_wire_and_stays_valid_without() -> None:
    status = GatewayStatus(
        schema_version=1,
        site="s",
        gateway="g",
        state=GatewayState.ONLINE,
        ts=1,
        agent_version="0",
        meters=["m1"],
        health={"m1": health()},
    )
    assert GatewayStatus.model_validate_json(status.model_dump_json()) == status
    will = status.model_copy(update={"health": None})
    assert GatewayStatus.model_validate_json(will.model_dump_json()).health is None
    with pytest.raises(ValidationError, match="retries"):
        MeterHealth.model_validate(health().model_dump() | {"retries": 1})
    with pytest.raises(ValidationError, match="breaker"):
        MeterHealth.model_validate(health().model_dump() | {"breaker": "half-open"})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_metrics_text_parses_and_carries_the_same_numbers() -> None:
    dead = health(polls=4, successes=0, success_rate=0.0, last_good_ts=None, breaker="open", exceptions={})
    got = samples(render({"m1": health(), "dead": dead}))

    def value(name: str, meter: str, **extra: str) -> float | None:
        labels = tuple(sorted({"meter": meter, "bus": "rs485", **extra}.items()))
        return got.get((f"kilowatch_agent_meter_{name}", labels))

    assert (value("polls_total", "m1"), value("successes_total", "m1"), value("skipped_total", "m1")) == (
        10,
        7,
        2,
    )
    kinds = {"timeout": 3, "crc": 1, "wrong_unit": 0, "malformed": 0, "modbus_exception": 4}
    assert {kind: value("failures_total", "m1", kind=kind) for kind in kinds} == kinds
    assert value("modbus_exceptions_total", "m1", code="2") == 4
    assert value("last_good_timestamp_seconds", "m1") == 1_795_828_800.25
    assert value("poll_latency_seconds", "m1") == 0.125
    assert (value("breaker_open", "m1"), value("breaker_open", "dead")) == (0, 1)
    assert value("last_good_timestamp_seconds", "dead") is None  # absent, not 0 (1970)
    assert not any(
        name.endswith("modbus_exceptions_total") and dict(labels)["meter"] == "dead" for name, labels in got
    )


def test_label_values_are_escaped() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    odd = 'pump "2"\\west\nwing'
    got = samples(render({odd: health()}))
    assert got[("kilowatch_agent_meter_polls_total", (("bus", "rs485"), ("meter", odd)))] == 10


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\n", "200 OK"),
        (b"GET /metrics?x=1 HTTP/1.0\r\n", "200 OK"),
        (b"GET / HTTP/1.1\r\n", "404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\n", "405 Method Not Allowed"),
        (b"\r\n", "400 Bad Request"),
        (b"GET /metrics\r\n", "400 Bad Request"),
    ],
)
def test_only_get_metrics_answers_with_metrics(line: bytes, status: str) -> None:
    got_status, content_type, body = respond(line, lambda: {"m1": health()})
    assert got_status == status
    assert (content_type == CONTENT_TYPE) == (status == "200 OK")
    assert (b"kilowatch_agent_meter_polls_total" in body) == (status == "200 OK")


def test_a_negative_health_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="health_interval_s"):
        Publisher(MqttSettings(), site="s", gateway="g", health_interval_s=-1)


async def test_a_metrics_port_in_use_is_logged_and_the_agent_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with contextlib.AsyncExitStack() as stack:
            await serve_metrics(stack, MetricsSettings(enabled=True, port=port), dict)
    assert f"metrics endpoint off: cannot listen on 127.0.0.1:{port}" in caplog.text


async def test_a_meter_answering_impossible_values_is_flagged_and_reported_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    values, words = full_map(SDM)
    garbage = register_map(SDM, values | {"frequency_hz": 2.5e9})
    reader = MemoryReader({1: garbage})
    meter = MeterSlot(id="m1", unit=1, profile=SDM, timing=NO_RETRY, requests=plan(SDM))
    events: list[tuple[GatewayEventKind, str]] = []
    worker = BusWorker(name="b", reader=reader, meters=[meter], report=lambda *e: events.append(e))
    for _ in range(3):
        [reading] = await worker.cycle(ClockState.SYNCED)
        assert reading.quality is Quality.BAD
        assert "frequency_hz" not in reading.values
    assert events == [
        (
            GatewayEventKind.METER_IMPLAUSIBLE,
            "meter m1 (bus b, unit 1): 1 values impossible, e.g. frequency_hz: 2.5e+09 Hz is outside the "
            f"physical range 0..1000 Hz; sent as bad until {PLAUSIBLE_AGAIN_POLLS} clean polls in a row",
        )
    ]
    snapshot = meter.health.snapshot(bus="b", breaker=BreakerState.CLOSED)
    assert (snapshot.implausible, snapshot.implausible_values) == (True, 3)
    reader.units[1] = words
    for _ in range(
        PLAUSIBLE_AGAIN_POLLS - 1
    ):  # one clean poll does not clear it: garbage decodes well now and then
        await worker.cycle(ClockState.SYNCED)
        assert meter.health.implausible
    reader.units[1] = {}  # a timeout neither clears nor sets it
    await worker.cycle(ClockState.SYNCED)
    reader.units[1] = words
    await worker.cycle(ClockState.SYNCED)
    assert not meter.health.implausible
    assert events[1:] == [
        (GatewayEventKind.METER_PLAUSIBLE, "meter m1 (bus b, unit 1): reads plausibly again")
    ]
    assert caplog.text.count("values impossible") == 1
    got = samples(render({"m1": meter.health.snapshot(bus="b", breaker=BreakerState.CLOSED)}))
    assert got[("kilowatch_agent_meter_implausible_values_total", (("bus", "b"), ("meter", "m1")))] == 3
    assert got[("kilowatch_agent_meter_implausible", (("bus", "b"), ("meter", "m1")))] == 0
