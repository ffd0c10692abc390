"""Meter health end to end: a real agent polls the simulator (one unit dead) over Modbus TCP and reports
health on its retained status in Mosquitto and on its Prometheus endpoint."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.clock import now_ms
from agent.config import AgentConfig
from agent.runner import run
from app.processes import Mosquitto, free_port
from kilowatch.mqtt_contract import Channel, GatewayState, GatewayStatus, MeterHealth, topic
from kilowatch.profiles import load_builtin
from sim.faults import Fault, FaultKind
from sim.server import SimServer
from tests.agent_support import payload

pytestmark = pytest.mark.services

SDM = load_builtin("eastron-sdm630")
STATUS = topic("s1", "g1", Channel.STATUS)
METERS = ("m1", "m2", "dead")


def config(mqtt_port: int, modbus_port: int, metrics_port: int, spool: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "site": "s1",
            "gateway": "g1",
            "spool": {"path": spool},
            "poll_interval_s": 0.5,
            "health_interval_s": 0.3,
            "mqtt": {"port": mqtt_port},
            "clock": {"mode": "synced"},
            "metrics": {"enabled": True, "port": metrics_port},
            "buses": [
                {
                    "name": "panel",
                    "transport": "tcp",
                    "host": "127.0.0.1",
                    "port": modbus_port,
                    # Generous for the live meters (the simulator shares this test's busy event loop),
                    # short for the dead one so that it times out often.
                    "timing": {"timeout_s": 3.0, "retries": 0},
                    "meters": [
                        {"id": "m1", "profile": "sdm630", "unit": 1},
                        {"id": "m2", "profile": "sdm630", "unit": 2},
                        {"id": "dead", "profile": "sdm630", "unit": 3, "timing": {"timeout_s": 0.2}},
                    ],
                }
            ],
        }
    )


async def statuses(client: aiomqtt.Client) -> AsyncIterator[GatewayStatus]:
    async for message in client.messages:
        if str(message.topic) == STATUS:
            yield GatewayStatus.model_validate_json(payload(message))


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.headers["Content-Type"], response.read().decode()


COUNTS: dict[str, Callable[[MeterHealth], int]] = {
    "polls_total": lambda h: h.polls,
    "successes_total": lambda h: h.successes,
    "skipped_total": lambda h: h.skipped,
    "failures_total/timeout": lambda h: h.timeouts,
}


def counts(text: str) -> dict[tuple[str, str], float]:
    """(meter, counter) -> value; failures by kind as ``failures_total/<kind>``; per meter only."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "meter" not in sample.labels:  # the gateway's own (spool) metrics
                continue
            name = sample.name.removeprefix("kilowatch_agent_meter_")
            kind = sample.labels.get("kind")
            out[(sample.labels["meter"], f"{name}/{kind}" if kind else name)] = sample.value
    return out


def health_counts(status: GatewayStatus) -> dict[tuple[str, str], float]:
    assert status.health is not None
    return {(meter, name): count(status.health[meter]) for meter in METERS for name, count in COUNTS.items()}


def settled(status: GatewayStatus) -> bool:
    """The dead meter has timed out at least twice and the others have read at least twice."""
    health: dict[str, MeterHealth] = status.health or {}
    return (
        len(health) == 3
        and health["dead"].timeouts >= 2
        and min(health[m].successes for m in ("m1", "m2")) >= 2
    )


async def test_health_on_the_status_topic_and_the_metrics_endpoint(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    metrics_port = free_port()
    stop = asyncio.Event()
    async with (
        SimServer(profile=SDM, units=[1, 2, 3], port=0, faults={3: Fault(kind=FaultKind.DEAD)}) as sim,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as sub,
    ):
        await sub.subscribe(STATUS, qos=1)
        agent = asyncio.create_task(
            run(config(mosquitto.port, sim.port, metrics_port, tmp_path / "spool.db"), stop=stop)
        )
        received = statuses(sub)
        async with asyncio.timeout(30):
            birth = await anext(received)
            before = birth
            while not settled(before):
                before = await anext(received)
            asked = now_ms()
            content_type, text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{metrics_port}/metrics")
            answered = now_ms()
            after = await anext(received)
            while after.ts <= answered:
                after = await anext(received)
            with pytest.raises(urllib.error.HTTPError, match="404"):
                await asyncio.to_thread(scrape, f"http://127.0.0.1:{metrics_port}/")
            stop.set()
            await agent
            last = await anext(received)
            while last.state is not GatewayState.OFFLINE:
                last = await anext(received)

    assert (birth.state, sorted(birth.health or {})) == (GatewayState.ONLINE, sorted(METERS))
    assert before.health is not None
    dead, good = before.health["dead"], before.health["m1"]
    assert (dead.bus, dead.successes, dead.last_good_ts, dead.crc_errors) == ("panel", 0, None, 0)
    assert dead.timeouts == dead.polls  # one request per poll: the rest of an unreachable meter's is skipped
    assert (good.timeouts, good.success_rate, good.breaker) == (0, 1.0, "closed")
    assert good.last_good_ts is not None
    assert good.last_latency_s is not None

    # The scrape happened between the two statuses, so every count lies between theirs.
    assert before.ts <= asked  # received before the scrape was asked, so taken before it
    scraped = counts(text)
    low, high = health_counts(before), health_counts(after)
    for key in low:
        assert low[key] <= scraped[key] <= high[key], key
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert ("dead", "last_good_timestamp_seconds") not in scraped
    assert scraped[("m1", "last_good_timestamp_seconds")] * 1000 >= good.last_good_ts
    assert scraped[("m2", "poll_latency_seconds")] > 0
    assert last.health is None  # the offline status, like the last will, carries none
