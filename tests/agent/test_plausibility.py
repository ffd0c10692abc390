"""A meter answering garbage, through the real agent: the simulator's own `garbage` fault (random words in
well-formed frames) over Modbus TCP, the agent's runner, and a real Mosquitto.

No value outside its quantity's physical range is ever sent as a value (let alone `good`); the meter is
flagged in the status message's health and reported by one event, not one per cycle.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest

from agent.config import AgentConfig
from agent.runner import run
from app.processes import Mosquitto
from kilowatch.mqtt_contract import (
    Channel,
    GatewayEvent,
    GatewayEventKind,
    GatewayState,
    GatewayStatus,
    Quality,
    ReadingsBatch,
    topic,
)
from kilowatch.profiles import load_builtin
from kilowatch.quantities import out_of_range
from sim.faults import parse_fault
from sim.server import SimServer
from tests.agent_support import kilowatch, payload
from tests.paths import REPO

pytestmark = pytest.mark.services

SDM = load_builtin("eastron-sdm630")
CYCLES = 12
DOCS = REPO / "docs" / "mqtt"


def config(mqtt_port: int, sim_port: int, spool: str) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "site": "s1",
            "gateway": "g1",
            "poll_interval_s": 0.5,
            "health_interval_s": 0.5,
            "mqtt": {"port": mqtt_port},
            "spool": {"path": spool, "commit_interval_s": 0.05},
            "clock": {"mode": "synced"},
            "buses": [
                {
                    "name": "bus-a",
                    "transport": "tcp",
                    "host": "127.0.0.1",
                    "port": sim_port,
                    "meters": [
                        {"id": "healthy", "profile": "eastron-sdm630", "unit": 1},
                        {"id": "garbled", "profile": "eastron-sdm630", "unit": 2},
                    ],
                }
            ],
        }
    )


async def test_a_meter_answering_garbage_sends_no_impossible_value_and_is_flagged_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    unit, fault = parse_fault("2:garbage")  # what `kilowatch sim --fault 2:garbage` serves
    raw: list[dict[str, Any]] = []
    batches: list[ReadingsBatch] = []
    events: list[GatewayEvent] = []
    statuses: list[GatewayStatus] = []
    stop = asyncio.Event()
    async with (
        SimServer(profile=SDM, units=[1, 2], port=0, faults={unit: fault}) as sim,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as sub,
    ):
        await sub.subscribe("kilowatch/v1/s1/g1/#", qos=1)
        agent = asyncio.create_task(run(config(mosquitto.port, sim.port, f"{tmp_path}/spool.db"), stop=stop))
        async with asyncio.timeout(60):
            async for message in sub.messages:
                body = payload(message)
                match str(message.topic):
                    case t if t == topic("s1", "g1", Channel.READINGS):
                        raw.append(json.loads(body))
                        batches.append(ReadingsBatch.model_validate_json(body))
                    case t if t == topic("s1", "g1", Channel.EVENTS):
                        events.append(GatewayEvent.model_validate_json(body))
                    case _:
                        statuses.append(GatewayStatus.model_validate_json(body))
                health = statuses[-1].health if statuses else None
                if len(batches) >= CYCLES and events and health and health["garbled"].polls >= CYCLES:
                    break
        stop.set()
        await asyncio.wait_for(agent, 20)

    readings = [r for b in batches for r in b.readings]
    garbled = [r for r in readings if r.meter == "garbled"]
    healthy = [r for r in readings if r.meter == "healthy"]
    schema = json.loads((DOCS / "readings-batch.schema.json").read_text())
    for doc in raw:  # as it went over the wire (the model would have demoted an impossible value itself)
        jsonschema.validate(doc, schema)
        for reading in doc["readings"]:
            assert [(n, v) for n, v in reading["values"].items() if out_of_range(n, v) is not None] == []
    assert batches == [ReadingsBatch.model_validate(doc) for doc in raw]
    assert all(
        r.values == w["values"]
        for b, d in zip(batches, raw, strict=True)
        for r, w in zip(b.readings, d["readings"], strict=True)
    )
    assert all(r.quality is Quality.GOOD for r in healthy), [r.value_reasons for r in healthy]
    assert all(r.quality is not Quality.GOOD for r in garbled)
    bad = {n for r in garbled for n, q in r.value_quality.items() if q is Quality.BAD}
    assert bad, "random words decode to impossible values"
    assert all(
        set(r.value_reasons) == {n for n, q in r.value_quality.items() if q is Quality.BAD} for r in garbled
    )
    assert [(e.kind, e.detail.split(":")[0]) for e in events] == [
        (GatewayEventKind.METER_IMPLAUSIBLE, "meter garbled (bus bus-a, unit 2)")
    ]
    online = [s for s in statuses if s.state is GatewayState.ONLINE and s.health is not None]
    last = online[-1].health
    assert last is not None
    assert (last["garbled"].implausible, last["healthy"].implausible) == (True, False)
    assert last["garbled"].implausible_values >= len(bad)
    assert last["healthy"].implausible_values == 0


async def test_agent_read_shows_impossible_values_as_bad() -> None:
    unit, fault = parse_fault("2:garbage")
    async with SimServer(profile=SDM, units=[2], port=0, faults={unit: fault}) as sim:
        code, out, err = await kilowatch(
            "agent", "read", "--tcp", f"127.0.0.1:{sim.port}", "--unit", "2", "--profile", "sdm630", "--json"
        )
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["bad"], "random words decode to impossible values"
    assert all("outside the physical range" in why for why in result["bad"].values())
    assert all(out_of_range(name, value) is None for name, value in result["values"].items())
    assert not set(result["bad"]) & set(result["values"])
