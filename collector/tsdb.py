"""Raw readings to a time-series database through the InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics).

Nothing is lost while the TSDB is down: the ledger writes every newly stored reading, already serialised
as line protocol (:mod:`collector.line_protocol`), to its ``tsdb_outbox`` table in the transaction that
stores it. :class:`TsdbWriter` sends the outbox in order and deletes rows only once the TSDB has taken
them; while writes fail it retries with backoff and the ledger keeps committing. The backlog is on
/metrics. A crash between a write and its delete resends those points once more, which the TSDB's
(meter, ts) dedup absorbs (VictoriaMetrics with dedup, InfluxDB by overwriting the same point). So does a
delete the ledger cannot commit (a full disk): the rows stay, the writer waits with backoff and sends them
again, and never stops for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision

from collector.config import TsdbSettings
from collector.metrics import CollectorMetrics
from collector.store import Ledger, LedgerReader, LedgerUnwritable, TsdbOutboxRow
from kilowatch.backoff import Backoff

log = logging.getLogger(__name__)


def _describe(exc: Exception) -> str:
    if isinstance(exc, InfluxDBError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class TsdbWriter:
    """Drains the ledger's outbox into the TSDB; run :meth:`run` as a task, call :meth:`wake` after commits.

    Args:
        settings: Where to write, request size and retry policy.
        metrics: Counters and the backlog gauges to update.
        ledger: Whose outbox to drain (rows are read on a read-only connection of its own). Its backlog is
            counted here, once, so create the writer before ingestion starts.
        poll_s: With replicas: also look at the outbox this often (other replicas' commits do not wake this
            writer); None: only when woken.
    """

    def __init__(
        self,
        *,
        settings: TsdbSettings,
        metrics: CollectorMetrics,
        ledger: Ledger,
        poll_s: float | None = None,
    ) -> None:
        self._settings = settings
        self._poll_s = poll_s
        self._metrics = metrics
        self._ledger = ledger
        self._backoff = Backoff(first_s=settings.retry_min_s, max_s=settings.retry_max_s)
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._failing = False
        # Before any commit can move them: the ingestor adds to these gauges, the writer takes away.
        self.count_backlog()

    def count_backlog(self) -> None:
        """Set the backlog gauges to what the outbox holds."""
        with self._ledger.reader() as reader:
            rows, points = reader.outbox_backlog()
        self._metrics.tsdb_outbox_rows.set(rows)
        self._metrics.tsdb_outbox_points.set(points)

    @property
    def url(self) -> str:
        return self._settings.url

    def wake(self) -> None:
        """New outbox rows were committed."""
        self._empty.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Wait until the outbox is empty (what is left when this is cut short stays in the outbox)."""
        await self._empty.wait()

    async def run(self) -> None:
        """Write the outbox as it fills, oldest first, until cancelled."""
        s = self._settings
        token = s.token.get_secret_value() if s.token else ""  # "" sends no Authorization header
        timeout_ms = int(s.timeout_s * 1000)
        reader = await asyncio.to_thread(self._ledger.reader)
        try:
            async with InfluxDBClientAsync(url=s.url, token=token, org=s.org, timeout=timeout_ms) as client:
                await self._drain_forever(reader, client.write_api())
        finally:
            reader.close()

    async def _drain_forever(self, reader: LedgerReader, write_api: WriteApiAsync) -> None:
        while True:
            self._wake.clear()
            chunk = await asyncio.to_thread(reader.outbox, self._settings.max_points_per_write)
            if not chunk:
                self._empty.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                continue
            if not await self._write(write_api, chunk):
                await asyncio.sleep(self._backoff.next_delay())
                continue
            try:
                await asyncio.to_thread(self._ledger.outbox_delete, chunk[-1].id)
            except LedgerUnwritable as exc:
                wait = self._backoff.next_delay()
                log.warning(
                    "the TSDB took %d outbox rows but the ledger cannot forget them (%s); they stay and are "
                    "sent again (the TSDB deduplicates them) in %.1f s",
                    len(chunk), exc, wait,
                )  # fmt: skip
                await asyncio.sleep(wait)
                continue
            self._metrics.tsdb_outbox_rows.dec(len(chunk))
            self._metrics.tsdb_outbox_points.dec(sum(row.points for row in chunk))

    async def _write(self, write_api: WriteApiAsync, chunk: list[TsdbOutboxRow]) -> bool:
        points = sum(row.points for row in chunk)
        try:
            await write_api.write(
                bucket=self._settings.bucket,
                record="\n".join(row.lines for row in chunk),
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # annotated as the class, is "ms"
            )
        except (InfluxDBError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._metrics.tsdb_errors.inc()
            log.log(
                logging.DEBUG if self._failing else logging.WARNING,
                "TSDB write to %s failed (%s): %d points stay in the outbox and are retried%s",
                self.url,
                _describe(exc),
                points,
                "" if self._failing else "; further failures are logged at DEBUG until a write succeeds",
            )
            self._failing = True
            return False
        self._metrics.tsdb_points_written.inc(points)
        if self._failing:
            log.info("TSDB writes to %s succeed again; the outbox is draining", self.url)
        self._failing = False
        self._backoff.reset()
        return True
