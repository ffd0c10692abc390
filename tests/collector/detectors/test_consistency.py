"""Event-time consistency as a property: every shipped scenario's data, stored in a real ledger and judged
by live detection into a real alert store, give the same alerts (start, end, waste) whether they arrive
live (an hour at a time), as a backlog in 1-day or 3-day chunks, or live with a collector restart in the
middle. A few days per scenario (the big province: a sample of its gateways) to stay fast."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.evaluation.evaluate import scenario_sites
from collector.alerts import AlertStore
from collector.config import DetectionSettings
from collector.detect_live import LiveDetection
from collector.detectors.config import Sites
from collector.detectors.findings import Detector
from collector.store import AlertQuery, Ledger, Location
from kilowatch.mqtt_contract import ReadingsBatch
from kilowatch.timebase import DAY_MS, HOUR_MS
from sim.generate import Run
from sim.scenario import SCENARIO_DIR, load_scenario
from tests.alert_support import FakeClock
from tests.ledger_support import LedgerAt

DAYS = 4
INTERVAL_S = 300
GATEWAYS_PER_SITE_KIND = 1
"""Of a scenario with repeated sites, one gateway of each: every kind of meter, quickly."""

AlertKey = tuple[str, Detector, str, int, int | None, float]


def sampled(run: Run) -> list[tuple[str, str]]:
    """Of each site of the scenario file, its first gateways, those with anomalies placed on them first."""
    placed = {p.target.split("/")[0].split(".")[0] for p in run.placed}
    kept: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for site, gateway in sorted(run.gateways, key=lambda g: (g[0] not in placed, g)):
        spec = next(m.site.id for m in run.scenario.meters if m.site_id == site)
        if len(kept[spec]) < GATEWAYS_PER_SITE_KIND:
            kept[spec].append((site, gateway))
    return [g for gateways in kept.values() for g in gateways]


def deliveries(sent: list[ReadingsBatch], begin_ms: int, chunk_ms: int) -> list[list[ReadingsBatch]]:
    """The batches in chunks of `chunk_ms` of event time, each gateway's in its own order."""
    chunks: dict[int, list[ReadingsBatch]] = defaultdict(list)
    for batch in sent:
        newest = max(r.ts for r in batch.readings)
        chunks[(newest - begin_ms) // chunk_ms].append(batch)
    return [chunks[k] for k in sorted(chunks)]


def alerts(
    path: Location, sites: Sites, chunks: Sequence[list[ReadingsBatch]], restart_at: int | None = None
) -> set[AlertKey]:
    settings = DetectionSettings(enabled=True, sites=Path("unused.yaml"), clock="data")
    clock = FakeClock(0)
    detection = LiveDetection(path, sites, settings, clock=clock)
    with Ledger(path) as ledger, AlertStore(path, clock=clock) as store:
        for i, chunk in enumerate(chunks):
            clock.now_ms = max(r.ts for b in chunk for r in b.readings) + INTERVAL_S * 1000
            ledger.store(chunk, received_at=clock.now_ms)
            if i == restart_at:
                detection.close()
                detection = LiveDetection(path, sites, settings, clock=clock)
            for finding in detection.scan().findings:
                store.apply(finding)
                detection.applied(finding)
        detection.close()
        found = store.alerts(AlertQuery(limit=10_000))
    return {(a.meter, a.detector, a.rule, a.start_ms, a.end_ms, round(a.wasted_kwh, 2)) for a in found}


@pytest.mark.parametrize("name", sorted(path.stem for path in SCENARIO_DIR.glob("*.yaml")))
def test_live_backlog_and_restart_give_the_same_alerts(name: str, ledger_at: LedgerAt) -> None:
    spec = load_scenario(name)
    run = Run(spec, start=spec.start, days=DAYS, interval_s=INTERVAL_S)
    gateways = sampled(run)
    sent = [
        ReadingsBatch.model_validate_json(line)
        for site, gateway in gateways
        for line in run.batches(site, gateway)
    ]
    judged = {m.id for m in spec.meters if (m.site_id, m.gateway) in gateways}
    everyone = scenario_sites(spec, INTERVAL_S)
    sites = Sites(
        sites={
            site_id: site.model_copy(update={"meters": {k: v for k, v in site.meters.items() if k in judged}})
            for site_id, site in everyone.sites.items()
            if any(k in judged for k in site.meters)
        }
    )
    begin = round(run.begin.timestamp() * 1000)
    live = alerts(ledger_at("live"), sites, deliveries(sent, begin, HOUR_MS))
    assert live, "the scenario gives some alerts in its first days"
    assert alerts(ledger_at("day"), sites, deliveries(sent, begin, DAY_MS)) == live
    assert alerts(ledger_at("3day"), sites, deliveries(sent, begin, 3 * DAY_MS)) == live
    hourly = deliveries(sent, begin, HOUR_MS)
    assert alerts(ledger_at("restart"), sites, hourly, restart_at=len(hourly) // 2) == live
