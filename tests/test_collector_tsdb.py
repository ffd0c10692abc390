"""Raw readings to a real VictoriaMetrics (InfluxDB v2 write API); a TSDB that is down loses nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from collector.config import MqttSettings, TsdbSettings
from collector.ingest import Ingestor
from collector.ledger import Ledger
from collector.metrics import CollectorMetrics
from collector.tsdb import TsdbWriter, points
from kilowatch.mqtt_contract import Channel, ClockState, Quality, Reading, topic
from tests.collector_support import at, batch, reading
from tests.services import VictoriaMetrics, eventually, free_port

A = batch(
    reading(at(10, 0, 1) + 123, meter="m1", imp=1234.5, exp=0.25, power_w=4200.0),
    reading(at(10, 0, 2) + 7, meter="m2", power_w=-15.5),
    Reading(
        meter="m3",
        profile="eastron-sdm630",
        ts=at(10),
        values={},
        quality=Quality.ERROR,
        value_quality={"active_power_w": Quality.ERROR},
        clock=ClockState.SYNCED,
    ),
    site="hanoi-1",
    gateway="gw-7",
)


@pytest.fixture
async def run_writer() -> AsyncIterator[Callable[[TsdbWriter], None]]:
    tasks: list[asyncio.Task[None]] = []
    yield lambda writer: tasks.append(asyncio.create_task(writer.run(), name="test-tsdb-writer"))
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_point_per_reading_with_values() -> None:
    lines = [p.to_line_protocol() for p in points(A)]
    assert lines == [
        "meter,gateway=gw-7,meter=m1,model=eastron-sdm630,site=hanoi-1 "
        f"active_power_w=4200,energy_export_kwh=0.25,energy_import_kwh=1234.5 {at(10, 0, 1) + 123}",
        "meter,gateway=gw-7,meter=m2,model=eastron-sdm630,site=hanoi-1 "
        f"active_power_w=-15.5 {at(10, 0, 2) + 7}",
    ]


@pytest.mark.services
async def test_points_arrive_in_victoria_metrics(
    victoria: VictoriaMetrics, run_writer: Callable[[TsdbWriter], None]
) -> None:
    metrics = CollectorMetrics()
    writer = TsdbWriter(settings=TsdbSettings(url=victoria.url), metrics=metrics)
    run_writer(writer)
    writer.submit(A)
    await writer.drain()
    assert metrics.registry.get_sample_value("kilowatch_collector_tsdb_points_written_total") == 2

    def exported() -> list[dict[str, Any]]:
        series = victoria.export('{__name__=~"meter_.*"}')
        return series if len(series) == 4 else []

    series = await eventually(lambda: exported(), "4 series in VictoriaMetrics")
    got = {
        (s["metric"]["__name__"], s["metric"]["meter"]): (s["values"], s["timestamps"], s["metric"])
        for s in series
    }
    tags = {"site": "hanoi-1", "gateway": "gw-7", "model": "eastron-sdm630"}
    assert got.keys() == {
        ("meter_energy_import_kwh", "m1"),
        ("meter_energy_export_kwh", "m1"),
        ("meter_active_power_w", "m1"),
        ("meter_active_power_w", "m2"),
    }
    assert got["meter_energy_import_kwh", "m1"][:2] == ([1234.5], [at(10, 0, 1) + 123])
    assert got["meter_energy_export_kwh", "m1"][:2] == ([0.25], [at(10, 0, 1) + 123])
    assert got["meter_active_power_w", "m2"][:2] == ([-15.5], [at(10, 0, 2) + 7])
    for _, _, labels in got.values():
        assert tags.items() <= labels.items()


@pytest.mark.services
async def test_a_tsdb_that_is_down_costs_the_ledger_nothing(
    tmp_path: Path, run_writer: Callable[[TsdbWriter], None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="collector.tsdb")
    metrics = CollectorMetrics()
    settings = TsdbSettings(url=f"http://127.0.0.1:{free_port()}", token="tok-s3cret", timeout_s=2)  # noqa: S106 - a fake, checked absent from logs
    writer = TsdbWriter(settings=settings, metrics=metrics)
    run_writer(writer)
    with Ledger(tmp_path / "ledger.db") as ledger:
        ingestor = Ingestor(settings=MqttSettings(), ledger=ledger, metrics=metrics, sink=writer.submit)
        for minute in range(3):
            message = batch(reading(at(10, minute), imp=10.0 + minute, power_w=100.0), seq=minute)
            await ingestor.handle(topic("site1", "gw1", Channel.READINGS), message.model_dump_json().encode())
            await writer.drain()  # one write (and one failure) per batch
        with ledger.reader() as r:
            assert len(r.readings("m1", 0, at(23))) == 3
    assert metrics.registry.get_sample_value("kilowatch_collector_readings_accepted_total") == 3
    assert metrics.registry.get_sample_value("kilowatch_collector_tsdb_errors_total") == 3
    assert metrics.registry.get_sample_value("kilowatch_collector_tsdb_points_dropped_total") == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # then DEBUG until a write succeeds
    assert "the ledger keeps them" in warnings[0]
    assert "s3cret" not in caplog.text


async def test_a_full_queue_drops_from_the_tsdb_path_only_and_counts() -> None:
    metrics = CollectorMetrics()
    writer = TsdbWriter(
        settings=TsdbSettings(url="http://127.0.0.1:1"), metrics=metrics, max_queued_batches=1
    )
    writer.submit(A)
    writer.submit(A)  # nothing is writing: the queue is full
    assert metrics.registry.get_sample_value("kilowatch_collector_tsdb_points_dropped_total") == 2
