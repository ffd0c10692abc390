"""The demo site's past week, so that the web app has a typical day to compare with and detection has
something to find in the demo's first minutes.

The demo's meters are one scenario (:data:`SCENARIO`): `kilowatch sim serve --scenario` serves it live
from the demo's start, and :func:`history` computes the week before with the dataset generator, as the
gateway's backlog of that week. The floor-1 circuit (the air conditioning) was left on after work
yesterday and is still on: an after-hours waste that detection reports as soon as the backlog is in.

A simulated meter's counters start from the same reading whenever it starts, so the week's counters are
shifted down by what the week used: they end where the live meters begin, and no counter steps back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from kilowatch.mqtt_contract import Channel, topic

SITE = "demo-office"
GATEWAY = "gw-demo"
PROFILE = "eastron-sdm630"
METERS: dict[str, dict[str, Any]] = {
    "main": {"unit": 1, "model": "office", "role": "main", "rated_kw": 40},
    "floor-1": {"unit": 2, "model": "office", "rated_kw": 30, "parts": ["cooling"]},
    "floor-2": {"unit": 3, "model": "office", "rated_kw": 15, "parts": ["lights"]},
}
"""The demo's meters by id, as the agent names them (the scenario qualifies them with the site)."""
DAYS = 7
"""Days of history before the demo's own day."""
INTERVAL_S = 300
"""Seconds between the history's readings."""
WASTE = {"meter": "floor-1", "from": "19:00", "kw": 12}
"""The waste: the air conditioning of floor 1 left on after work yesterday, and still on."""
COUNTERS = ("energy_import_kwh", "reactive_energy_import_kvarh")
"""The counters that grow with the load (export counters stay where they are)."""


def scenario(*, history: bool) -> dict[str, Any]:
    """The demo's scenario. The history's run starts DAYS days ago, and floor 1's air conditioning is
    left on from 19:00 on its day DAYS - 1 (yesterday) and through its day DAYS (today); the live run
    starts today, the air conditioning still on (so the alert stays open while the demo runs today)."""
    meters = [{"id": name, "profile": PROFILE, **spec} for name, spec in METERS.items()]
    left_on = (
        [(DAYS - 1, WASTE["from"], "23:59"), (DAYS, "00:00", "23:59")] if history else [(0, "00:00", "23:59")]
    )
    anomalies = [
        {
            "kind": "after_hours_waste",
            "meter": f"{SITE}.{WASTE['meter']}",
            "day": day,
            "window": {"from": start, "to": end},
            "magnitude_kw": WASTE["kw"],
        }
        for day, start, end in left_on
    ]
    return {
        "name": "demo-office",
        "description": "The demo's office: a main meter, air conditioning and lighting sub-meters",
        "seed": 20260601,
        "start": "2026-06-01",
        "sites": [
            {
                "id": SITE,
                "kind": "office",
                "coordinates": {"lat": 21.028, "lon": 105.854},
                "gateways": [
                    {"id": GATEWAY, "buses": [{"id": "sim-tcp", "transport": "tcp", "meters": meters}]}
                ],
            }
        ],
        "anomalies": anomalies,
    }


def write_scenario(path: Path, *, history: bool) -> Path:
    path.write_text(yaml.safe_dump(scenario(history=history), sort_keys=False))
    return path


def history(scenario_file: Path, today: date, until: datetime) -> list[str]:
    """The gateway's readings batches from DAYS days before `today` up to `until` (excluded), meters
    named as the agent names them, counters shifted to end where the live meters' begin."""
    from sim.generate import Run  # numpy and the load models: not for every `kilowatch` command
    from sim.scenario import load_scenario

    run = Run(
        load_scenario(str(scenario_file)),
        start=today - timedelta(days=DAYS),
        days=DAYS + 1,
        interval_s=INTERVAL_S,
    )
    until_ms = int(until.timestamp() * 1000)
    batches = [b for b in map(json.loads, run.batches(SITE, GATEWAY)) if b["sent_at"] <= until_ms]
    first: dict[tuple[str, str], float] = {}
    last: dict[tuple[str, str], float] = {}
    for reading in _readings(batches):
        for name in COUNTERS:
            if name in reading["values"]:
                first.setdefault((reading["meter"], name), reading["values"][name])
                last[(reading["meter"], name)] = reading["values"][name]
    for reading in _readings(batches):
        for name in COUNTERS:
            if name in reading["values"]:
                used = last[(reading["meter"], name)] - first[(reading["meter"], name)]
                reading["values"][name] = round(reading["values"][name] - used, 4)
        reading["meter"] = reading["meter"].removeprefix(f"{SITE}.")
    return [json.dumps(b, separators=(",", ":")) for b in batches]


def _readings(batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for batch in batches:
        yield from batch["readings"]


async def publish(batches: list[str], *, host: str, port: int, protocol: str) -> None:
    """Send `batches` on the gateway's readings topic, QoS 1, in order: as the gateway flushes a backlog."""
    import aiomqtt  # the MQTT client: not for every `kilowatch` command

    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    name = topic(SITE, GATEWAY, Channel.READINGS)
    async with aiomqtt.Client(host, port, identifier="kilowatch-demo-history", protocol=version) as client:
        for batch in batches:
            await client.publish(name, batch.encode(), qos=1)
