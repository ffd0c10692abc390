"""MQTT ingestion: subscribe to every gateway's readings, status and events; validate; commit; acknowledge.

Nothing is lost between the broker and the ledger: the collector keeps a persistent session (see
:mod:`collector.mqtt_acks`) and acknowledges a message only after the ledger transaction holding it has
committed. Messages are committed in groups (whatever has arrived, up to half the receive maximum) and
then acknowledged in order: one transaction per group is what makes throughput, and it lets the broker
send the next group meanwhile. A collector that dies before committing gets the group again; the ledger
skips what it already has. The client holds at most the receive maximum of received, unacknowledged
messages: it stops reading the socket there (see :mod:`collector.mqtt_acks`), as the broker may send
more. When the ledger cannot commit, nothing is acknowledged: the collector drops the connection and
reconnects later, and the broker redelivers.

A bad message is logged (reason, never the payload), counted by reason and kept in the ledger's
``rejected`` table; it never stops the loop nor the valid traffic behind it. The broker may be down when
the collector starts or go away later: the loop reconnects with exponential backoff and jitter, and the
rest of the collector (the API) keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence

import aiomqtt

from collector import mqtt_acks
from collector.config import MqttSettings
from collector.metrics import CollectorMetrics
from collector.store import IngestResult, Item, Ledger, RejectedMessage
from collector.validate import Rejected, parse_message
from kilowatch.backoff import Backoff
from kilowatch.mqtt_contract import Channel, GatewayEvent, GatewayEventKind, ReadingsBatch, subscription

log = logging.getLogger(__name__)

_SUBSCRIBE_FAILED = 0x80


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _as_bytes(payload: object) -> bytes:
    """aiomqtt types payloads loosely; what arrives from the broker is bytes."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class Ingestor:
    """Consumes ``<root>/+/+/{readings,status,events}`` into the ledger.

    Args:
        settings: The broker, session and topic root.
        ledger: Where messages are stored (its sync methods run in a worker thread).
        metrics: Counters to update.
        on_commit: Called (without awaiting) after a commit that added rows to the TSDB outbox.
    """

    def __init__(
        self,
        *,
        settings: MqttSettings,
        ledger: Ledger,
        metrics: CollectorMetrics,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._metrics = metrics
        self._on_commit = on_commit
        self._group_max = max(1, settings.receive_maximum // 2)
        self._backoff = Backoff(first_s=settings.reconnect_min_s, max_s=settings.reconnect_max_s)
        self.connected = False
        """True while subscribed to the broker (for /healthz)."""

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._metrics.mqtt_connected.set(int(connected))

    async def run(self) -> None:
        """Forever: connect, subscribe, commit and acknowledge messages; on failure wait and retry."""
        await asyncio.to_thread(self._load_gauges)
        while True:
            reason = "the connection ended"
            try:
                async with mqtt_acks.session_client(self._settings) as client, asyncio.TaskGroup() as tasks:
                    # Consuming starts before subscribing: the session's messages may come before the
                    # SUBACKs, and the client reads no further while it holds receive_maximum of them.
                    tasks.create_task(self._consume(client), name="mqtt-consume")
                    await self._subscribe(client)
                    self._set_connected(True)
                    self._backoff.reset()
                    log.info("connected to MQTT broker %s", self._settings.address)
            except* aiomqtt.MqttError as group:
                reason = str(group.exceptions[0])
            except* sqlite3.Error as group:
                reason = (
                    f"the ledger cannot commit ({group.exceptions[0]}); nothing was acknowledged, the broker"
                    " keeps it"
                )
            finally:
                self._set_connected(False)
            wait = self._backoff.next_delay()
            log.warning(
                "MQTT broker %s unavailable (%s); retrying in %.1f s", self._settings.address, reason, wait
            )
            await asyncio.sleep(wait)

    def _load_gauges(self) -> None:
        """Start the gauges from what the ledger holds; commits move them from there."""
        with self._ledger.reader() as reader:
            self._metrics.missing_batches.set(reader.missing_batches())
            for reason, count in reader.quarantine_counts().items():
                self._metrics.quarantined.labels(reason=reason.value).set(count)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for channel in Channel:
            topic = subscription(channel, root=self._settings.topic_root)
            granted = await client.subscribe(topic, qos=1)
            if any(code == _SUBSCRIBE_FAILED for code in granted):
                log.error("the broker refused the subscription to %s (check its ACL)", topic)

    async def _consume(self, client: aiomqtt.Client) -> None:
        """Group what has arrived, commit it, then acknowledge it in order; repeat."""
        messages = client.messages
        while True:
            group = [await anext(messages)]
            while len(group) < self._group_max and len(messages):
                group.append(await anext(messages))
            try:
                await self.store([(m.topic.value, _as_bytes(m.payload)) for m in group])
            except sqlite3.Error:
                self._metrics.store_errors.inc(len(group))
                log.exception("could not commit %d messages to the ledger", len(group))
                raise
            for message in group:
                mqtt_acks.ack(client, message)

    async def store(self, received: Sequence[tuple[str, bytes]]) -> None:
        """Validate messages (topic, payload) and commit them in one transaction, in a worker thread.

        Raises sqlite3.Error when the ledger cannot commit (then nothing of the group is stored).
        """
        items, results = await asyncio.to_thread(self._validate_and_store, received)
        for item, result in zip(items, results, strict=True):
            self._account(item, result)
        if self._on_commit is not None and any(r.outbox_rows for r in results):
            self._on_commit()

    def _validate_and_store(
        self, received: Sequence[tuple[str, bytes]]
    ) -> tuple[list[Item], list[IngestResult]]:
        received_at = _now_ms()
        items: list[Item] = []
        for topic, payload in received:
            try:
                items.append(parse_message(topic, payload, root=self._settings.topic_root))
            except Rejected as rejected:
                items.append(RejectedMessage(topic, rejected.reason.value, rejected.detail, payload))
        return items, self._ledger.store(items, received_at=received_at)

    def _account(self, item: Item, result: IngestResult) -> None:
        """Metrics and logs for one committed message."""
        m = self._metrics
        if isinstance(item, RejectedMessage):
            m.rejected.labels(reason=item.reason).inc()
            log.warning(
                "rejected a message on %s (%d bytes): %s: %s",
                item.topic,
                len(item.payload),
                item.reason,
                item.detail,
            )
            return
        m.accepted_readings.inc(result.accepted)
        m.duplicate_readings.inc(result.duplicates)
        m.counter_resets.inc(result.counter_resets)
        m.duplicate_batches.inc(int(result.duplicate_batch))
        m.missing_batches.inc(result.missing_batches)
        m.corrected.inc(result.corrected)
        m.tsdb_outbox_rows.inc(result.outbox_rows)
        m.tsdb_outbox_points.inc(result.outbox_points)
        for reason, change in result.quarantined.items():
            m.quarantined.labels(reason=reason.value).inc(change)
        where = f"{item.site}/{item.gateway}"
        if isinstance(item, GatewayEvent):
            if result.new_event:
                self._account_event(item)
            return
        if result.corrected:
            log.info("%s: %d readings re-dated from the clock anchor and stored", where, result.corrected)
        if not isinstance(item, ReadingsBatch):
            log.info("gateway %s is %s", where, item.state.value)
            return
        m.clock_stepped.inc(result.clock_stepped)
        if result.new_clock_step:
            log.warning(
                "%s: its clock stepped away from this boot's offset; %d readings re-dated by their monotonic "
                "time (more of the same step are counted, not logged)",
                where, result.clock_stepped,
            )  # fmt: skip
        if result.missing_batches > 0:
            log.warning(
                "%s: batches %d-%d of spool %s never arrived (the gateway's spool evicted them?)",
                where,
                item.seq - result.missing_batches,
                item.seq - 1,
                item.spool_id,
            )
        if result.counter_resets:
            log.warning(
                "%s batch %d: %d counter(s) went backwards (reset or new meter, see counter_events)",
                where,
                item.seq,
                result.counter_resets,
            )

    def _account_event(self, event: GatewayEvent) -> None:
        self._metrics.gateway_events.labels(kind=event.kind.value).inc()
        if event.kind is GatewayEventKind.SPOOL_EVICTED:
            self._metrics.evicted_readings.inc(event.readings)
        log.warning(
            "gateway %s/%s: %s (%d readings): %s",
            event.site,
            event.gateway,
            event.kind.value,
            event.readings,
            event.detail,
        )
