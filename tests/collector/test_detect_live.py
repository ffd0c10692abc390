"""The detectors run live inside the collector, on the ledger's readings, in event time.

In process: a simulated dataset stored in a ledger gives the findings the offline evaluation gives,
whether it arrives at once (a flushed backlog) or a slot at a time, and across a restart; a meter that
falls silent is suppressed and reported once. Live: the real collector, a real Mosquitto, the simulator
publishing a gateway's backlog with after-hours waste in it, and a real webhook receiving the signed,
priced, bilingual alert that says it was raised late.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.evaluation.evaluate import scenario_sites
from app.processes import Mosquitto, Process, free_port, require_binary, wait_until
from collector.alerts import AlertChange, AlertStore
from collector.config import CollectorConfig, DetectionSettings
from collector.detect_live import LiveDetection
from collector.detectors.config import load_sites
from collector.detectors.findings import Detector, Finding
from collector.store import AlertQuery, AlertStatus, Ledger, Location
from kilowatch import yamlconfig
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    Channel,
    GatewayState,
    GatewayStatus,
    ReadingsBatch,
    topic,
)
from kilowatch.timebase import SLOT_MS
from sim.generate import Run
from sim.scenario import Scenario, load_scenario
from tests.alert_support import FakeClock, call
from tests.api_support import api_key
from tests.ledger_support import LedgerAt, ledger_settings

SECRET = "live-detect-s3cret-4242"  # noqa: S105 - the test receiver's

SCENARIO = """\
name: live-after-hours
description: A small office whose air conditioning is left on through a Sunday
seed: 20250606
start: 2025-06-06
sites:
  - id: office
    kind: office
    coordinates: {lat: 21.853, lon: 106.761}
    gateways:
      - id: gw-1
        buses:
          - id: rs485-1
            transport: rtu
            meters:
              - {id: main, profile: eastron-sdm630, unit: 1, model: office, role: main, rated_kw: 15}
              - {id: cooling, profile: eastron-sdm630, unit: 2, model: office, rated_kw: 60, parts: [cooling]}
anomalies:
  - {kind: after_hours_waste, meter: office.cooling, day: 2, window: {from: "08:00", to: "23:59"}, magnitude_kw: 18}
"""
"""Friday to Sunday; the cooling is left on all Sunday, still on when the data ends."""

SITES = """\
sites:
  office:
    poll_s: 300
    meters:
      office.main: {role: office_main, rated_kw: 15}
      office.cooling: {role: sub_meter, rated_kw: 60}
"""
INTERVAL_S = 300
DAYS = 3
SUNDAY_8H = 1_749_344_400_000
"""2025-06-08 08:00 in Vietnam."""


def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "live-after-hours.yaml"
    path.write_text(SCENARIO)
    return path


def batches(spec: Scenario, days: int, interval_s: int) -> tuple[Run, list[ReadingsBatch]]:
    run = Run(spec, start=spec.start, days=days, interval_s=interval_s)
    out = [
        ReadingsBatch.model_validate_json(line)
        for site, gateway in sorted(run.gateways)
        for line in run.batches(site, gateway)
    ]
    return run, out


FindingKey = tuple[str, Detector, str, int, int | None, int, float, float]
"""What must agree of a finding: meter, detector, rule, start, end, detection time, waste and its cost."""


def key(f: Finding) -> FindingKey:
    return (f.meter, f.detector, f.rule, f.start_ms, f.end_ms, f.detected_at, f.wasted_kwh, f.cost_vnd)


def test_the_sites_file_of_the_live_test_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(SITES)
    assert set(load_sites(path).sites["office"].meters) == {"office.main", "office.cooling"}


def test_detection_needs_a_sites_file(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("detection:\n  enabled: true\n")
    with pytest.raises(yamlconfig.ConfigError, match="sites"):
        yamlconfig.load(CollectorConfig, path)


def test_a_backlog_gives_what_live_data_gives_and_a_restart_repeats_nothing(
    ledger_at: LedgerAt, tmp_path: Path
) -> None:
    spec = load_scenario(scenario(tmp_path))
    run, sent = batches(spec, DAYS, INTERVAL_S)
    sites = scenario_sites(spec, INTERVAL_S)
    end_ms = round(run.end.timestamp() * 1000)
    clock = FakeClock(end_ms)
    settings = DetectionSettings(enabled=True, sites=Path("unused.yaml"))

    backlog = ledger_at("backlog")
    with Ledger(backlog) as ledger:
        ledger.store(sent, received_at=end_ms)
    at_once = LiveDetection(backlog, sites, settings, clock=clock)
    flushed = at_once.scan().findings
    at_once.close()

    live = ledger_at("live")
    seen: dict[tuple[str, Detector, str, int], Finding] = {}
    detector = LiveDetection(live, sites, settings, clock=clock)
    with Ledger(live) as ledger:
        for batch in sent:  # a batch at a time, judged whenever a slot completes
            ledger.store([batch], received_at=0)
            clock.now_ms = max(r.ts for r in batch.readings) + INTERVAL_S * 1000
            if clock.now_ms % SLOT_MS == 0:
                for f in detector.scan().findings:
                    detector.applied(f)
                    seen[(f.meter, f.detector, f.rule, f.start_ms)] = f  # the newest state of each
    detector.close()
    assert sorted(map(key, seen.values())) == sorted(map(key, flushed))
    [waste] = [f for f in flushed if f.detector is Detector.AFTER_HOURS and f.meter == "office.cooling"]
    assert waste.end_ms is None  # still on when the data ends
    assert SUNDAY_8H <= waste.start_ms <= SUNDAY_8H + 2 * SLOT_MS
    assert waste.wasted_kwh > 200
    assert waste.cost_vnd > 0

    again = LiveDetection(live, sites, settings, clock=clock)  # a restart: nothing in memory
    assert sorted(map(key, again.scan().findings)) == sorted(map(key, flushed))
    assert again.scan().judged == 0  # nothing changed since
    again.close()


def test_a_silent_meter_is_suppressed_and_reported_once(ledger_at: LedgerAt, tmp_path: Path) -> None:
    spec = load_scenario(scenario(tmp_path))
    run, sent = batches(spec, DAYS, INTERVAL_S)
    end_ms = round(run.end.timestamp() * 1000)
    path = ledger_at("kilowatch")
    with Ledger(path) as ledger:
        ledger.store(sent, received_at=end_ms)
    clock = FakeClock(end_ms)
    detector = LiveDetection(path, scenario_sites(spec, INTERVAL_S), DetectionSettings(), clock=clock)
    before = detector.scan().findings
    for f in before:
        detector.applied(f)
    assert not [f for f in before if f.rule == "no_data"]
    clock.now_ms = end_ms + 3 * 3_600_000  # three hours without a reading
    later = detector.scan().findings
    assert {(f.meter, f.rule, f.start_ms, f.end_ms) for f in later} == {
        ("office.main", "no_data", end_ms, None),
        ("office.cooling", "no_data", end_ms, None),
    }  # the after-hours episode is neither repeated nor cleared by the silence
    for f in later:
        detector.applied(f)
    clock.now_ms += 3_600_000
    assert detector.scan().findings == []
    detector.close()


def test_findings_become_alerts_once(ledger_at: LedgerAt, tmp_path: Path) -> None:
    spec = load_scenario(scenario(tmp_path))
    run, sent = batches(spec, DAYS, INTERVAL_S)
    end_ms = round(run.end.timestamp() * 1000)
    path = ledger_at("kilowatch")
    with Ledger(path) as ledger:
        ledger.store(sent, received_at=end_ms)
    clock = FakeClock(end_ms + 2 * 86_400_000)
    detector = LiveDetection(path, scenario_sites(spec, INTERVAL_S), DetectionSettings(), clock=clock)
    with AlertStore(path, channels=("webhook",), clock=clock) as store:

        async def submit(finding: Finding) -> AlertChange:
            return await asyncio.to_thread(store.apply, finding)

        report = asyncio.run(detector.run_once(submit))
        assert report is not None
        assert report.findings
        assert asyncio.run(detector.run_once(submit)) is not None
        [alert] = store.alerts(AlertQuery(detector=Detector.AFTER_HOURS, meter="office.cooling"))
        assert (alert.status, alert.raised_late, alert.count) == (AlertStatus.OPEN, True, 1)
        assert len(store.due("webhook", limit=100)) == len(report.findings)
    detector.close()


# --- live: collector process, Mosquitto, simulator, webhook -------------------------------------------


def _after_hours(received: list[tuple[dict[str, str], bytes]]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    notices = [(headers, body, json.loads(body)) for headers, body in list(received)]
    return [
        (headers, notice)
        for headers, body, notice in notices
        if notice.get("alert", {}).get("detector") == "after_hours"
        and notice["alert"]["meter"] == "office.cooling"
        and hmac.compare_digest(
            headers["X-Kilowatch-Signature"],
            "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        )
    ]


def detecting_collector(
    ledger: Location, tmp_path: Path, mosquitto: Mosquitto, notify: dict[str, Any]
) -> tuple[list[str], str]:
    """(command, API base URL) of a collector on `ledger` judging the SITES above, configured in `tmp_path`."""
    api_port = free_port()
    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES)
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "client_id": "collector-detect"},
                "ledger": ledger_settings(ledger),
                "api": {"host": "127.0.0.1", "port": api_port},
                "notify": notify,
                "detection": {"enabled": True, "sites": str(sites), "interval_s": 0.5},
                "plausibility": {"retention_days": 36_600},  # the backlog is stamped in 2025
            }
        )
    )
    command = [sys.executable, "-c", "from collector.cli import app; app()", "run", "--config", str(config)]
    return command, f"http://127.0.0.1:{api_port}"


def test_the_collector_alerts_on_after_hours_waste_in_a_flushed_backlog(
    ledger_at: LedgerAt,
    tmp_path: Path,
    mosquitto: Mosquitto,
    hook: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    hook_url, received = hook
    notify = {
        "webhook": {"url": hook_url, "secret": SECRET},
        "poll_s": 0.2,
        "retry_min_s": 0.1,
        "digest_at": None,
    }
    command, base = detecting_collector(ledger_at("kilowatch"), tmp_path, mosquitto, notify)
    collector = Process("collector", command, tmp_path / "collector.log").start()
    try:
        wait_until(lambda: call(f"{base}/healthz")["mqtt_connected"], 20, "the collector to subscribe")
        key = api_key(ledger_at("kilowatch"))
        publish = subprocess.run(
            [
                sys.executable,
                "-c",
                "from app.cli import app; app()",
                "sim",
                "generate",
                "--scenario",
                str(scenario(tmp_path)),
                "--days",
                str(DAYS),
                "--interval",
                str(INTERVAL_S),
                "--publish",
                f"mqtt://{mosquitto.host}:{mosquitto.port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert publish.returncode == 0, publish.stdout + publish.stderr
        [(headers, notice)] = wait_until(
            lambda: _after_hours(received), 30, "the webhook to receive the after-hours alert"
        )
        # The opening may come while the backlog still arrives; the rest of it adds to the same alert.
        [listed] = wait_until(
            lambda: [
                a
                for a in call(f"{base}/api/v1/alerts?detector=after_hours&meter=office.cooling", key=key)
                if a["wasted_kwh"] > 200
            ],
            30,
            "the whole Sunday's waste in the alert",
        )
        assert collector.proc is not None
        collector.proc.send_signal(signal.SIGTERM)
        assert collector.proc.wait(timeout=20) == 0, collector.log()

        # A restart rebuilds the detectors' state from the ledger: the same alert, not notified again.
        restarted = Process("collector", command, tmp_path / "collector-2.log").start()
        try:
            wait_until(lambda: "detection pass" in restarted.log(), 20, "a detection pass after restart")
            assert restarted.proc is not None
            restarted.proc.send_signal(signal.SIGTERM)
            assert restarted.proc.wait(timeout=20) == 0, restarted.log()
        finally:
            restarted.stop()
    finally:
        collector.stop()
    alert = notice["alert"]
    assert headers["X-Kilowatch-Event"] == "alert.opened"
    assert (notice["kind"], alert["status"], alert["rule"], alert["end"]) == (
        "alert.opened",
        "open",
        "R4",
        None,
    )
    assert alert["start"].startswith("2025-06-08T01:")  # 08:xx on Sunday in Vietnam
    assert alert["wasted_kwh"] > 0
    assert alert["cost_vnd"] > alert["wasted_kwh"] * 1000  # priced at the site's time-of-use bands
    assert alert["raised_late"] is True
    assert "Raised late" in alert["message_en"]
    assert "kWh" in alert["message_en"]
    assert "VND" in alert["message_en"]
    assert "Cảnh báo muộn" in alert["message_vi"]
    assert "đồng" in alert["message_vi"]
    assert (listed["id"], listed["status"], listed["raised_late"]) == (alert["id"], "open", True)
    assert listed["cost_vnd"] > 200 * 1000
    assert len(_after_hours(received)) == 1, "the restart notified the alert again"
    assert SECRET not in collector.log()


def test_a_stepped_gateway_clock_is_reported_once_and_its_readings_judged_at_their_true_time(
    ledger_at: LedgerAt,
    tmp_path: Path,
) -> None:
    spec = load_scenario(scenario(tmp_path))
    run, sent = batches(spec, DAYS, INTERVAL_S)
    begin_ms = round(run.begin.timestamp() * 1000)
    jump = (begin_ms + 30 * 3_600_000, begin_ms + 32 * 3_600_000)  # Saturday 06:00-08:00: an hour ahead

    def as_the_agent_sends(batch: ReadingsBatch) -> ReadingsBatch:
        readings = [
            r.model_copy(
                update={
                    "mono_ms": r.ts - begin_ms + 5_000,  # booted 5 s before the data begins
                    "ts": r.ts + 3_600_000 if jump[0] <= r.ts < jump[1] else r.ts,
                }
            )
            for r in batch.readings
        ]
        return batch.model_copy(update={"boot_id": "boot-1", "readings": readings})

    end_ms = round(run.end.timestamp() * 1000)
    settings = DetectionSettings(enabled=True, sites=Path("unused.yaml"), clock="data")
    found = {}
    for name, messages in (("plain", sent), ("stepped", [as_the_agent_sends(b) for b in sent])):
        path = ledger_at(f"{name}")
        with Ledger(path) as ledger:
            ledger.store(messages, received_at=0)
        far_later = FakeClock(end_ms + 400 * 86_400_000)  # the data clock ignores the wall clock
        detector = LiveDetection(path, scenario_sites(spec, INTERVAL_S), settings, clock=far_later)
        found[name] = detector.scan().findings
        for f in found[name]:
            detector.applied(f)
        assert detector.scan().findings == []  # applied once
        detector.close()
    [step] = [f for f in found["stepped"] if f.rule == "untrusted_clock"]
    assert (step.site, step.meter, step.start_ms, step.end_ms) == ("office", "office/gw-1", jump[0], jump[1])
    assert sorted(map(key, found["plain"])) == sorted(map(key, (f for f in found["stepped"] if f != step)))
    assert not [f for f in found["plain"] if f.rule == "no_data"]


def test_a_gateway_is_offline_from_its_last_will_to_its_next_birth(
    ledger_at: LedgerAt, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    command, base = detecting_collector(ledger_at("kilowatch"), tmp_path, mosquitto, {"digest_at": None})
    name = topic("office", "gw-1", Channel.STATUS)

    def status(state: GatewayState) -> str:
        return GatewayStatus(
            schema_version=SCHEMA_VERSION, site="office", gateway="gw-1", state=state, ts=round(time.time() * 1000),
            agent_version="test", meters=["office.main", "office.cooling"],
        ).model_dump_json()  # fmt: skip

    def offline_alerts() -> list[dict[str, Any]]:
        meter = urllib.parse.quote("office/gw-1", safe="")
        listed: list[dict[str, Any]] = call(
            f"{base}/api/v1/alerts?detector=data_quality&meter={meter}",
            key=api_key(ledger_at("kilowatch")),
        )
        return listed

    collector = Process("collector", command, tmp_path / "collector.log").start()
    try:
        wait_until(lambda: call(f"{base}/healthz")["mqtt_connected"], 20, "the collector to subscribe")
        key = api_key(ledger_at("kilowatch"))
        # The gateway: a real MQTT client whose connection dies without a goodbye, so the broker sends its will.
        gateway = subprocess.Popen(
            [
                require_binary("mosquitto_pub"), "-h", mosquitto.host, "-p", str(mosquitto.port), "-t", name,
                "-q", "1", "-r", "-l", "--will-topic", name, "--will-payload", status(GatewayState.OFFLINE),
                "--will-qos", "1", "--will-retain",
            ],
            stdin=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert gateway.stdin is not None
        gateway.stdin.write(status(GatewayState.ONLINE) + "\n")
        gateway.stdin.flush()
        wait_until(
            lambda: call(f"{base}/api/v1/gateways", key=key)[0]["state"] == "online",
            20,
            "the gateway's birth",
        )
        gateway.kill()
        gateway.wait()
        [opened] = wait_until(offline_alerts, 20, "the gateway-offline alert")
        assert (opened["rule"], opened["status"], opened["site"]) == ("gateway_offline", "open", "office")
        assert "gateway offline" in opened["message_en"]
        assert "mất kết nối" in opened["message_vi"]
        mosquitto.publish(name, status(GatewayState.ONLINE))  # born again
        [resolved] = wait_until(
            lambda: [a for a in offline_alerts() if a["status"] == "resolved"], 20, "the alert to resolve"
        )
        assert resolved["id"] == opened["id"]
        assert resolved["end"] is not None
    finally:
        collector.stop()
