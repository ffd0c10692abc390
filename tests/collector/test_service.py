"""The collector as a process: config file in, MQTT to ledger, TSDB and API, SIGTERM out with exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.processes import Mosquitto, Process, VictoriaMetrics, free_port, port_open, wait_until
from collector.cli import app
from collector.config import ApiSettings, CollectorConfig, LedgerSettings, MqttSettings
from collector.ingest import Ingestor
from collector.service import serve
from kilowatch.mqtt_contract import Channel, topic
from tests.api_support import api_key, open_descriptors
from tests.collector_support import at, batch, reading
from tests.services import eventually


def get(url: str, key: str | None) -> bytes:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback
        return bytes(response.read())


def get_json(url: str, key: str | None = None) -> Any:
    return json.loads(get(url, key))


@pytest.mark.services
def test_runs_ingests_serves_and_stops_on_sigterm(
    tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics
) -> None:
    api_port = free_port()
    host, port = victoria.url.removeprefix("http://").split(":")
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
        "  username: collector\n  password: pw-s3cret\n"
        f"ledger:\n  path: {tmp_path / 'kilowatch.db'}\n"
        f"tsdb:\n  url: http://{host}:{port}\n  token: tok-s3cret\n"
        f"api:\n  port: {api_port}\n"
        "plausibility:\n  retention_days: 36600\n"  # the readings are stamped in 2024
    )
    collector = Process(
        "collector",
        [sys.executable, "-c", "from collector.cli import app; app()", "run", "--config", str(config)],
        tmp_path / "collector.log",
    ).start()
    created = CliRunner().invoke(app, ["keys", "create", "tests", "--role", "admin", "--config", str(config)])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_until(lambda: get_json(f"{base}/healthz")["mqtt_connected"], 20, "the collector to connect")
        message = batch(reading(at(10), imp=5.0, power_w=1500.0), reading(at(10, 20), imp=6.0), seq=9)
        mosquitto.publish(topic("site1", "gw1", Channel.READINGS), message.model_dump_json())
        wait_until(lambda: get_json(f"{base}/api/v1/meters", key), 20, "the meter in the API")
        latest = get_json(f"{base}/api/v1/meters/m1/latest", key)
        assert (latest["ts"], latest["values"]) == ("2024-05-01T10:20:00Z", {"energy_import_kwh": 6.0})
        intervals = get_json(
            f"{base}/api/v1/meters/m1/intervals?from=2024-05-01T10:00:00Z&to=2024-05-01T11:00:00Z", key
        )
        assert [i["energy_import_kwh"] for i in intervals["intervals"]] == [0.75, 0.25]
        assert b"kilowatch_collector_readings_accepted_total 2.0" in get(f"{base}/metrics", key)
        [series] = wait_until(
            lambda: victoria.export('{__name__="meter_energy_import_kwh"}'),
            20,
            "the points in the TSDB",
        )
        assert (series["values"], series["timestamps"]) == ([5.0, 6.0], [at(10), at(10, 20)])
        assert collector.proc is not None
        collector.proc.send_signal(signal.SIGTERM)
        assert collector.proc.wait(timeout=20) == 0, collector.log()
    finally:
        collector.stop()
    log = collector.log()
    assert f"API http://127.0.0.1:{api_port}" in log
    assert str(tmp_path / "kilowatch.db") in log
    assert f"TSDB http://{host}:{port}" in log
    assert f"broker mqtt://{mosquitto.host}:{mosquitto.port}" in log
    assert "stopped" in log
    assert "s3cret" not in log
    assert key.partition("_")[2] not in log


def test_an_api_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = tmp_path / "collector.yaml"
        config.write_text(
            f"mqtt:\n  port: {free_port()}\nledger:\n  path: {tmp_path / 'k.db'}\napi:\n  port: {port}\n"
        )
        result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert f"the API cannot listen on 127.0.0.1:{port}" in result.output


def _newer(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 999")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.write_bytes(b"not a database, " * 512), "file is not a database"),
        (_newer, "newer than this release"),
        (lambda path: path.mkdir(), "unable to open database file"),
    ],
    ids=["corrupt", "newer-schema", "cannot-open"],
)
def test_a_ledger_unusable_but_for_room_is_a_clear_error(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    """Only a full disk makes start-up wait (tests/collector/test_disk_full.py); anything else exits 1."""
    ledger = tmp_path / "k.db"
    make(ledger)
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"mqtt:\n  port: {free_port()}\nledger:\n  path: {ledger}\napi:\n  port: {free_port()}\n"
    )
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert f"cannot open the ledger {ledger}" in result.output
    assert message in result.output


async def test_sigterm_ends_every_task_and_closes_what_it_opened(tmp_path: Path) -> None:
    """In this process, without a broker: the API (its lifespan run by uvicorn) serves; SIGTERM leaves no
    task, no signal handler and no open ledger file behind."""
    ledger = tmp_path / "kilowatch.db"
    port = free_port()
    config = CollectorConfig(
        mqtt=MqttSettings(port=free_port()), ledger=LedgerSettings(path=ledger), api=ApiSettings(port=port)
    )
    headers = {"Authorization": f"Bearer {api_key(ledger)}"}
    service = asyncio.create_task(serve(config), name="collector")
    await eventually(lambda: port_open("127.0.0.1", port), "the API to listen")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers) as client:
        assert (await client.get("/healthz")).json()["status"] == "degraded"
        assert (await client.get("/api/v1/alerts")).json() == []
    assert open_descriptors(ledger) >= 3  # the ledger's, the notifications' and the API's connections
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(service, 20)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
    assert open_descriptors(ledger) == 0


async def test_a_background_task_that_fails_is_started_again_and_the_service_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unforeseen error in ingestion (here: its first two runs raise) is logged, counted and the task
    started again with backoff; the API serves throughout and SIGTERM still ends everything."""
    real_run = Ingestor.run
    calls: list[int] = []

    async def failing_run(self: Ingestor) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError(f"unforeseen #{len(calls)}")
        await real_run(self)

    monkeypatch.setattr(Ingestor, "run", failing_run)
    monkeypatch.setattr("collector.service.RESTART_MIN_S", 0.05)
    port = free_port()
    config = CollectorConfig(
        mqtt=MqttSettings(port=free_port()),
        ledger=LedgerSettings(path=tmp_path / "kilowatch.db"),
        api=ApiSettings(port=port),
    )
    service = asyncio.create_task(serve(config), name="collector")
    await eventually(lambda: len(calls) == 3, "the ingest task to be started a third time")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert (await client.get("/healthz")).json()["status"] == "degraded"  # no broker, not failing
        key = api_key(config.ledger.path)
        text = (await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})).text
    assert 'kilowatch_collector_task_restarts_total{task="mqtt-ingest"} 2.0' in text
    assert not service.done()
    assert "task mqtt-ingest failed; starting it again" in caplog.text
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(service, 20)
