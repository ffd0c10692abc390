"""Raw readings to a time-series database through the InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics).

One point per reading: measurement ``meter``, tags site/gateway/meter/model (the profile id), fields =
the reading's values, time = the reading's event time in ms. Ingestion hands batches to a bounded
queue and never waits for the TSDB. When a write fails (or the queue is full) those points are dropped
from the TSDB path only: logged, counted, and still in the ledger, from which an outbox can resend them.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision

from collector.config import TsdbSettings
from collector.metrics import CollectorMetrics
from kilowatch.mqtt_contract import ReadingsBatch

log = logging.getLogger(__name__)

MEASUREMENT = "meter"


def points(batch: ReadingsBatch) -> list[Point]:
    """The batch's readings as points; a reading without values (all unreadable) has nothing to write."""
    result = []
    for reading in batch.readings:
        if not reading.values:
            continue
        tags = {
            "site": batch.site,
            "gateway": batch.gateway,
            "meter": reading.meter,
            "model": reading.profile,
        }
        # influxdb-client ships py.typed but leaves Point unannotated.
        point = Point(MEASUREMENT).time(reading.ts, WritePrecision.MS)  # type: ignore[no-untyped-call]
        for key, tag in tags.items():
            point.tag(key, tag)
        for name, value in sorted(reading.values.items()):
            point.field(name, float(value))
        result.append(point)
    return result


def _describe(exc: Exception) -> str:
    if isinstance(exc, InfluxDBError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class TsdbWriter:
    """Writes queued batches; run :meth:`run` as a task and feed it with :meth:`submit`.

    Args:
        settings: Where to write.
        metrics: Counters to update.
        max_queued_batches: Batches waiting at most; beyond that new ones are dropped from the TSDB path.
        max_points_per_write: Queued batches are merged into one request up to about this many points.
    """

    def __init__(
        self,
        *,
        settings: TsdbSettings,
        metrics: CollectorMetrics,
        max_queued_batches: int = 1000,
        max_points_per_write: int = 5000,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._queue: asyncio.Queue[ReadingsBatch] = asyncio.Queue(max_queued_batches)
        self._max_points = max_points_per_write
        self._failing = False
        self._dropped_while_failing = 0
        self._queue_full = False

    @property
    def url(self) -> str:
        return self._settings.url

    def submit(self, batch: ReadingsBatch) -> None:
        """Queue a batch without waiting; when the queue is full the batch skips the TSDB."""
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            dropped = sum(1 for r in batch.readings if r.values)
            self._metrics.tsdb_points_dropped.inc(dropped)
            if not self._queue_full:
                log.warning(
                    "TSDB queue full (%d batches): dropping points from the TSDB path until it drains; "
                    "the ledger keeps them",
                    self._queue.maxsize,
                )
            self._queue_full = True
        else:
            self._queue_full = False

    async def drain(self) -> None:
        """Wait until every queued batch has been written (or dropped)."""
        await self._queue.join()

    async def run(self) -> None:
        """Write batches as they come, merging what has queued up, until cancelled."""
        s = self._settings
        token = s.token.get_secret_value() if s.token else ""  # "" sends no Authorization header
        timeout_ms = int(s.timeout_s * 1000)
        async with InfluxDBClientAsync(url=s.url, token=token, org=s.org, timeout=timeout_ms) as client:
            write_api = client.write_api()
            while True:
                batches = [await self._queue.get()]
                records = points(batches[0])
                while len(records) < self._max_points and not self._queue.empty():
                    batches.append(self._queue.get_nowait())
                    records += points(batches[-1])
                try:
                    if records:
                        await self._write(write_api, records)
                finally:
                    for _ in batches:
                        self._queue.task_done()

    async def _write(self, write_api: WriteApiAsync, records: list[Point]) -> None:
        try:
            await write_api.write(
                bucket=self._settings.bucket,
                record=records,
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # annotated as the class, is "ms"
            )
        except (InfluxDBError, aiohttp.ClientError, OSError) as exc:
            self._metrics.tsdb_errors.inc()
            self._metrics.tsdb_points_dropped.inc(len(records))
            self._dropped_while_failing += len(records)
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(
                level,
                "TSDB write to %s failed (%s): %d points dropped from the TSDB path, the ledger keeps them%s",
                self.url,
                _describe(exc),
                len(records),
                "" if self._failing else "; further failures are logged at DEBUG until a write succeeds",
            )
            self._failing = True
            return
        self._metrics.tsdb_points_written.inc(len(records))
        if self._failing:
            log.info(
                "TSDB writes to %s succeed again; %d points were dropped meanwhile (the ledger keeps them)",
                self.url,
                self._dropped_while_failing,
            )
        self._failing = False
        self._dropped_while_failing = 0
