"""`kilowatch eval` through the real ingest path: simulator -> MQTT broker -> collector -> detectors -> alerts.

The scenario's dataset is published the way gateways flush a backlog (``sim generate --publish``) to a
broker (a private Mosquitto unless one is given), consumed by a real ``kilowatch collector run`` process
whose live detection is configured with the scenario's sites, and the alerts it raised are read back from
its API and scored against the labels exactly as :func:`app.evaluation.evaluate.evaluate` scores findings.
Nothing is shared in memory with the collector: what is scored is what a facility manager would be told.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from app.evaluation.evaluate import WARMUP_DAYS, Evaluation, scenario_sites, score
from app.processes import (
    UNBOUNDED_QUEUE,
    Children,
    Mosquitto,
    find_binary,
    free_port,
    get_json,
    get_text,
    wait_for,
)
from collector.access import Access, Role
from collector.detectors.findings import Detector
from collector.store import LedgerReader
from collector.store.access import AccessStore
from sim.scenario import Scenario

Say = Callable[[str], None]
Progress = Callable[[int], None]

_PASS_S = 1.0
"""Seconds between the collector's detection passes during an evaluation."""
_STARTUP_S = 60.0
_STALL_S = 120.0
"""How long the collector may store nothing new before the evaluation gives up on the rest."""
_CATCH_UP_S = 600.0
"""How long detection may take to catch up once every batch is stored."""


class EvalError(Exception):
    """The evaluation could not run (no broker, a part died); the message says why."""


@dataclass(frozen=True)
class RaisedAlert:
    """An alert from the collector's API, as scoring sees it."""

    meter: str
    detector: Detector
    rule: str
    start_ms: int
    end_ms: int | None
    detected_at: int

    @classmethod
    def of(cls, body: dict[str, Any]) -> RaisedAlert:
        def ms(text: str) -> int:
            return round(datetime.fromisoformat(text).timestamp() * 1000)

        return cls(
            body["meter"], Detector(body["detector"]), body["rule"], ms(body["start"]),
            None if body["end"] is None else ms(body["end"]), ms(body["detected_at"]),
        )  # fmt: skip


def _write_configs(
    workdir: Path, scenario: Scenario, *, host: str, port: int, api_port: int, interval_s: int, days: int
) -> Path:
    sites = workdir / "sites.yaml"
    sites.write_text(
        yaml.safe_dump(scenario_sites(scenario, interval_s).model_dump(mode="json"), sort_keys=False)
    )
    config = {
        "mqtt": {
            "host": host, "port": port, "client_id": f"kilowatch-eval-{scenario.name}-{time.time_ns()}",
            "session_expiry_s": 0,  # a one-off run: leave no session behind on a shared broker
        },
        # a one-off replay: keep every reading, as far back as detection catches up
        "ledger": {"path": str(workdir / "ledger.db"), "retention": {"readings_days": 36_600}},
        "api": {"host": "127.0.0.1", "port": api_port, "metrics_auth": "none"},  # loopback, one-off
        "detection": {
            "enabled": True, "sites": str(sites), "interval_s": _PASS_S, "catch_up_days": days + 1,
            "clock": "data",  # history replayed at full speed: the wall clock would call every meter silent
        },
        "notify": {"digest_at": None},
        "plausibility": {"retention_days": 36_600},  # history replayed: any age is plausible
    }  # fmt: skip
    path = workdir / "collector.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _stored_batches(ledger: Path) -> int:
    with LedgerReader(ledger) as reader:
        return reader.stored_batches()


def _counter(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f"{name}_total "):
            return float(line.split()[1])
    raise ValueError(f"{name} is not in /metrics")


def _api_key(ledger: Path) -> str:
    """An admin API key for this run's collector."""
    with AccessStore(ledger) as store:
        _, key = Access(store).create_key("evaluation", Role.ADMIN, None, time.time_ns() // 1_000_000)
    return key


def _alerts(base: str, key: str) -> list[RaisedAlert]:
    alerts: list[RaisedAlert] = []
    before = ""
    while page := get_json(f"{base}/api/v1/alerts?limit=1000{before}", timeout_s=30, key=key):
        alerts += [RaisedAlert.of(body) for body in page]
        before = f"&before={page[-1]['id']}"
    return alerts


async def _all_stored(ledger: Path, published: int, children: Children, progress: Progress | None) -> None:
    """Wait until the ledger holds every published batch, however long that takes while it moves on
    (`progress` told of each new batch stored); TimeoutError once nothing more arrives for `_STALL_S`
    (messages lost on the way)."""
    stored, moved = 0, time.monotonic()
    while stored < published:
        now = await wait_for("the ledger", lambda: _stored_batches(ledger) + 1, children, _STALL_S) - 1
        if now > stored:
            if progress is not None:
                progress(now - stored)
            stored, moved = now, time.monotonic()
        elif time.monotonic() - moved > _STALL_S:
            raise TimeoutError(
                f"the ledger stopped at {stored:,} of {published:,} batches for {_STALL_S:.0f} s"
            )
        await asyncio.sleep(1)


async def _caught_up(base: str, children: Children) -> None:
    """Wait until a whole detection pass that began after the last batch was stored judged no meter."""

    def counters() -> tuple[float, float]:
        text = get_text(f"{base}/metrics", timeout_s=10)
        return (
            _counter(text, "kilowatch_collector_detection_passes"),
            _counter(text, "kilowatch_collector_detection_meters_judged"),
        )

    async def begun(passes: float) -> tuple[float, float]:
        """(passes, meters judged) once `passes` passes have begun, i.e. all before the last have ended."""

        def check() -> tuple[float, float] | None:
            now = counters()
            return now if now[0] >= passes else None

        result: tuple[float, float] = await wait_for("a detection pass", check, children, _CATCH_UP_S)
        return result

    deadline = time.monotonic() + _CATCH_UP_S
    passes, _ = await begun(0)
    # The pass under way may have begun before the last batch was stored: only the one after it counts.
    passes, judged = await begun(passes + 2)
    while time.monotonic() < deadline:
        passes, judged_now = await begun(passes + 1)
        if judged_now == judged:
            return
        judged = judged_now
    raise TimeoutError(f"detection did not catch up within {_CATCH_UP_S:.0f} s")


async def evaluate_via_mqtt(
    scenario: Scenario,
    *,
    days: int,
    workdir: Path,
    start: date | None = None,
    interval_s: int = 60,
    warmup_days: int = WARMUP_DAYS,
    broker: str | None = None,
    say: Say = lambda _: None,
    progress: Progress | None = None,
    stored: Progress | None = None,
) -> Evaluation:
    """Publish `scenario` for `days` to `broker` (``mqtt://HOST:PORT``; None: a private Mosquitto), let a
    collector process ingest and judge it, and score the alerts it raised. Logs and the ledger stay in
    `workdir`. `progress` and `stored` are told of batches published and stored. EvalError if a part cannot
    start or dies."""
    from sim.generate import Broker, Run, publish_dataset

    run = Run(
        scenario, start=start or scenario.start, days=days, interval_s=interval_s, warmup_days=warmup_days
    )
    children = Children(workdir)
    kilowatch = [sys.executable, "-m", "app"]
    try:
        if broker is None:
            if find_binary("mosquitto") is None:
                raise EvalError(
                    "evaluating through MQTT needs a broker: install mosquitto (apt-get install mosquitto), "
                    "give one with --broker mqtt://HOST:PORT, or use --path in-process"
                )
            started = await asyncio.to_thread(Mosquitto.start, workdir, extra_conf=UNBOUNDED_QUEUE)
            children.add(started.process)
            target = Broker(host=started.host, port=started.port)
            say(f"broker     mosquitto on {started.host}:{started.port}")
        else:
            target = Broker.parse(broker)
            try:
                socket.create_connection((target.host, target.port), timeout=5).close()
            except OSError as exc:
                raise EvalError(f"cannot reach the broker {broker}: {exc}") from exc
            say(f"broker     {target.host}:{target.port}")
        api_port = free_port()
        config = _write_configs(
            workdir,
            scenario,
            host=target.host,
            port=target.port,
            api_port=api_port,
            interval_s=interval_s,
            days=warmup_days + days,
        )
        key = await asyncio.to_thread(_api_key, workdir / "ledger.db")
        children.start("collector", *kilowatch, "collector", "run", "--config", str(config))
        base = f"http://127.0.0.1:{api_port}"
        await wait_for(
            "the collector to subscribe",
            lambda: get_json(f"{base}/healthz")["mqtt_connected"],
            children,
            _STARTUP_S,
        )
        say(f"collector  {base}, ledger and logs in {workdir}")
        published = await publish_dataset(run, target, progress)
        say(f"published  {published:,} batches; waiting for the collector to store them")
        ledger = workdir / "ledger.db"
        await _all_stored(ledger, published, children, stored)
        say("stored     every batch; waiting for detection to catch up")
        await _caught_up(base, children)
        alerts = _alerts(base, key)
    except (TimeoutError, RuntimeError, OSError) as exc:
        raise EvalError(f"{exc} (logs in {workdir})") from exc
    finally:
        await children.stop()
    labels = [label.as_json() for label in run.labels()]
    sites = scenario_sites(scenario, interval_s).sites
    configs = {meter: config for s in sites.values() for meter, config in s.meters.items()}
    site_of = {m.id: m.site_id for m in scenario.meters}
    span = (round(run.labelled_from.timestamp() * 1000), round(run.end.timestamp() * 1000))
    scores = score(alerts, labels, configs, span, site_of)
    return Evaluation(
        scenario.name,
        days,
        alerts,
        labels,
        scores,
        path="MQTT -> collector -> alerts",
        meters=len(scenario.meters),
    )
