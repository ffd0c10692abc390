"""Raw readings to a real VictoriaMetrics through the ledger's outbox: a TSDB that is down loses nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.processes import Process, VictoriaMetrics, wait_until
from collector.config import MqttSettings, TsdbSettings
from collector.ingest import Ingestor
from collector.line_protocol import lines
from collector.metrics import CollectorMetrics
from collector.store import Ledger
from collector.tsdb import TsdbWriter
from kilowatch.mqtt_contract import Channel, ClockState, Quality, Reading, ReadingsBatch, topic
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt
from tests.services import eventually

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


def sample(name: str, metrics: CollectorMetrics) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


@pytest.fixture
async def run_writer() -> AsyncIterator[Callable[[TsdbWriter], None]]:
    tasks: list[asyncio.Task[None]] = []
    yield lambda writer: tasks.append(asyncio.create_task(writer.run(), name="test-tsdb-writer"))
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_line_per_reading_with_values() -> None:
    assert lines(A.site, A.gateway, A.readings) == [
        "meter,gateway=gw-7,meter=m1,model=eastron-sdm630,site=hanoi-1 "
        f"active_power_w=4200.0,energy_export_kwh=0.25,energy_import_kwh=1234.5 {at(10, 0, 1) + 123}",
        "meter,gateway=gw-7,meter=m2,model=eastron-sdm630,site=hanoi-1 "
        f"active_power_w=-15.5 {at(10, 0, 2) + 7}",
    ]
    assert lines("a site", "g,w", A.readings[1:2])[0].startswith(r"meter,gateway=g\,w,meter=m2,")


async def store(ingestor: Ingestor, *batches: ReadingsBatch) -> None:
    await ingestor.store(
        [(topic(b.site, b.gateway, Channel.READINGS), b.model_dump_json().encode()) for b in batches]
    )


@pytest.mark.services
async def test_points_arrive_in_victoria_metrics(
    ledger_at: LedgerAt, victoria: VictoriaMetrics, run_writer: Callable[[TsdbWriter], None]
) -> None:
    metrics = CollectorMetrics()
    with Ledger(ledger_at("ledger"), outbox=True) as ledger:
        writer = TsdbWriter(settings=TsdbSettings(url=victoria.url), metrics=metrics, ledger=ledger)
        ingestor = Ingestor(settings=MqttSettings(), ledger=ledger, metrics=metrics, on_commit=writer.wake)
        run_writer(writer)
        await store(ingestor, A)
        await writer.drain()
        assert sample("kilowatch_collector_tsdb_points_written_total", metrics) == 2
        assert sample("kilowatch_collector_tsdb_outbox_points", metrics) == 0
        with ledger.reader() as r:
            assert r.outbox_backlog() == (0, 0)

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


def restart(vm: VictoriaMetrics) -> VictoriaMetrics:
    """The same VictoriaMetrics again: same data folder, same port."""
    vm.stop()
    process = Process(vm.process.name, vm.process.args, vm.process.log_path).start()
    again = VictoriaMetrics(vm.url, process)
    wait_until(again.healthy, 20, "victoria-metrics to come back")
    return again


@pytest.mark.services
async def test_a_tsdb_that_is_down_loses_nothing_and_gets_every_point_once(
    ledger_at: LedgerAt,
    victoria: VictoriaMetrics,
    run_writer: Callable[[TsdbWriter], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="collector.tsdb")
    metrics = CollectorMetrics()
    settings = TsdbSettings(
        url=victoria.url,
        token="tok-s3cret",  # noqa: S106 - a fake, checked absent from logs
        timeout_s=2,
        max_points_per_write=7,
        retry_min_s=0.05,
        retry_max_s=0.2,
    )
    minutes = range(40)
    with Ledger(ledger_at("ledger"), outbox=True) as ledger:
        writer = TsdbWriter(settings=settings, metrics=metrics, ledger=ledger)
        ingestor = Ingestor(settings=MqttSettings(), ledger=ledger, metrics=metrics, on_commit=writer.wake)
        await store(ingestor, batch(reading(at(9), imp=1.0, power_w=1.0), seq=100))
        await asyncio.to_thread(victoria.stop)
        run_writer(writer)
        for minute in minutes:  # the ledger keeps committing while the TSDB is down
            message = batch(reading(at(10, minute), imp=10.0 + minute, power_w=100.0), seq=minute)
            await store(ingestor, message, message)  # a resend too
        with ledger.reader() as r:
            assert len(r.readings("m1", 0, at(23))) == 41
        await eventually(lambda: sample("kilowatch_collector_tsdb_errors_total", metrics) >= 2, "retries")
        assert sample("kilowatch_collector_tsdb_outbox_points", metrics) == 41
        assert sample("kilowatch_collector_tsdb_outbox_rows", metrics) == 41

        back = await asyncio.to_thread(restart, victoria)
        try:
            await asyncio.wait_for(writer.drain(), 30)
            assert sample("kilowatch_collector_tsdb_outbox_points", metrics) == 0
            assert sample("kilowatch_collector_tsdb_points_written_total", metrics) == 41
            [series] = await eventually(
                lambda: back.export('{__name__="meter_energy_import_kwh"}'), "the points in VictoriaMetrics"
            )
        finally:
            back.stop()
    assert series["timestamps"] == [at(9)] + [at(10, m) for m in minutes]
    assert series["values"] == [1.0] + [10.0 + m for m in minutes]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # then DEBUG until a write succeeds
    assert "stay in the outbox" in warnings[0]
    assert "s3cret" not in caplog.text


async def test_without_a_tsdb_nothing_waits_in_an_outbox(ledger_at: LedgerAt) -> None:
    with Ledger(ledger_at("ledger")) as ledger:
        ingestor = Ingestor(settings=MqttSettings(), ledger=ledger, metrics=CollectorMetrics())
        await store(ingestor, A)
        with ledger.reader() as r:
            assert r.outbox_backlog() == (0, 0)
            assert len(r.readings("m1", 0, at(23))) == 1
