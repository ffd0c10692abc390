"""A backlog flushed faster than the detection passes loses nothing: what ended more than catch_up_days
before the newest data is raised (marked raised late), or counted and logged at a site that asked not to
be told of old findings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.evaluation.evaluate import scenario_sites
from collector.alerts import AlertStore
from collector.config import DetectionSettings
from collector.detect_live import LiveDetection
from collector.detectors.config import Sites
from collector.store import AlertQuery, Ledger
from kilowatch.mqtt_contract import ReadingsBatch
from kilowatch.timebase import DAY_MS
from sim.generate import Run
from sim.scenario import Scenario
from tests.alert_support import FakeClock
from tests.ledger_support import LedgerAt

SCENARIO = """\
name: frozen-saturday
description: A cabinet whose registers freeze for an hour on Saturday morning
seed: 4
start: 2025-06-06
sites:
  - id: tu
    kind: street_lighting
    gateways:
      - id: gw
        buses:
          - id: rs485
            meters:
              - {id: cabinet, profile: eastron-sdm630, unit: 1, model: lighting_cabinet, rated_kw: 3}
anomalies:
  - {kind: frozen, meter: tu.cabinet, day: 1, window: {from: "10:00", to: "11:00"}}
"""
INTERVAL_S = 300


@pytest.mark.parametrize("notify", [True, False])
def test_a_finding_older_than_the_catch_up_window_is_raised_late_or_counted(
    ledger_at: LedgerAt, notify: bool
) -> None:
    scenario = Scenario.model_validate(yaml.safe_load(SCENARIO))
    run = Run(scenario, start=scenario.start, days=4, interval_s=INTERVAL_S)
    sent = [ReadingsBatch.model_validate_json(line) for line in run.batches("tu", "gw")]
    first_day = round(run.begin.timestamp() * 1000) + DAY_MS
    early = [b for b in sent if max(r.ts for r in b.readings) < first_day]
    rest = sent[len(early) :]
    sites = scenario_sites(scenario, INTERVAL_S)
    sites = Sites(
        sites={k: s.model_copy(update={"notify_old_findings": notify}) for k, s in sites.sites.items()}
    )
    settings = DetectionSettings(enabled=True, sites=Path("unused.yaml"), catch_up_days=1, clock="data")
    path = ledger_at("kilowatch")
    clock = FakeClock(0)
    detection = LiveDetection(path, sites, settings, clock=clock)
    with Ledger(path) as ledger, AlertStore(path, clock=clock) as store:
        for chunk in (early, rest):  # Friday, then Saturday to Monday in one go
            clock.now_ms = max(r.ts for b in chunk for r in b.readings) + INTERVAL_S * 1000
            ledger.store(chunk, received_at=clock.now_ms)
            report = detection.scan()
            for finding in report.findings:
                store.apply(finding)
                detection.applied(finding)
        frozen = [a for a in store.alerts(AlertQuery()) if a.rule == "frozen"]
    detection.close()
    if notify:
        [alert] = frozen
        assert alert.raised_late
        assert report.not_raised == 0
    else:
        assert frozen == []
        assert report.not_raised == 1
