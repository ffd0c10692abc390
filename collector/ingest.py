"""MQTT ingestion: subscribe to every gateway's readings and status, validate, store, pass on to the TSDB.

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
from collections.abc import Callable

import aiomqtt

from collector.config import MqttSettings
from collector.ledger import Ledger
from collector.metrics import CollectorMetrics
from collector.validate import Rejected, parse_message
from kilowatch.backoff import Backoff
from kilowatch.mqtt_contract import Channel, GatewayEvent, ReadingsBatch, subscription

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
    """Consumes ``<root>/+/+/readings`` and ``<root>/+/+/status`` into the ledger.

    Args:
        settings: The broker and topic root.
        ledger: Where messages are stored (its sync methods run in a worker thread).
        metrics: Counters to update.
        sink: Called with every stored batch, without awaiting (the TSDB writer's non-blocking submit).
    """

    def __init__(
        self,
        *,
        settings: MqttSettings,
        ledger: Ledger,
        metrics: CollectorMetrics,
        sink: Callable[[ReadingsBatch], None] | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._metrics = metrics
        self._sink = sink
        self._backoff = Backoff(first_s=settings.reconnect_min_s, max_s=settings.reconnect_max_s)
        self.connected = False
        """True while subscribed to the broker (for /healthz)."""

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._metrics.mqtt_connected.set(int(connected))

    async def run(self) -> None:
        """Forever: connect, subscribe, handle messages; when the connection fails, wait and retry."""
        while True:
            reason = "the connection ended"
            try:
                async with self._settings.client(identifier=self._settings.client_id) as client:
                    await self._subscribe(client)
                    self._set_connected(True)
                    self._backoff.reset()
                    log.info("connected to MQTT broker %s", self._settings.address)
                    async for message in client.messages:
                        await self.handle(message.topic.value, _as_bytes(message.payload))
            except aiomqtt.MqttError as exc:
                reason = str(exc)
            finally:
                self._set_connected(False)
            wait = self._backoff.next_delay()
            log.warning(
                "MQTT broker %s unavailable (%s); retrying in %.1f s", self._settings.address, reason, wait
            )
            await asyncio.sleep(wait)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for channel in (Channel.READINGS, Channel.STATUS):
            topic = subscription(channel, root=self._settings.topic_root)
            granted = await client.subscribe(topic, qos=1)
            if any(code == _SUBSCRIBE_FAILED for code in granted):
                log.error("the broker refused the subscription to %s (check its ACL)", topic)

    async def handle(self, topic: str, payload: bytes) -> None:
        """Validate and store one message. Never raises for bad input or a failing database."""
        received_at = _now_ms()
        try:
            message = parse_message(topic, payload, root=self._settings.topic_root)
        except Rejected as rejected:
            await self._reject(topic, payload, rejected, received_at)
            return
        try:
            if isinstance(message, GatewayEvent):
                log.warning(
                    "gateway %s/%s: %s: %s", message.site, message.gateway, message.kind, message.detail
                )
                return
            if isinstance(message, ReadingsBatch):
                result = await asyncio.to_thread(self._ledger.ingest, message)
            else:
                await asyncio.to_thread(self._ledger.record_status, message, received_at=received_at)
                log.info("gateway %s/%s is %s", message.site, message.gateway, message.state.value)
                return
        except sqlite3.Error:
            self._metrics.store_errors.inc()
            log.exception("could not store the message on %s in the ledger; it is lost", topic)
            return
        self._metrics.accepted_readings.inc(result.accepted)
        self._metrics.duplicate_readings.inc(result.duplicates)
        self._metrics.counter_resets.inc(result.counter_resets)
        if result.counter_resets:
            log.warning(
                "%s/%s batch %d: %d counter(s) went backwards (reset or new meter, see counter_events)",
                message.site,
                message.gateway,
                message.seq,
                result.counter_resets,
            )
        if self._sink is not None:
            self._sink(message)

    async def _reject(self, topic: str, payload: bytes, rejected: Rejected, received_at: int) -> None:
        self._metrics.rejected.labels(reason=rejected.reason.value).inc()
        log.warning(
            "rejected a message on %s (%d bytes): %s: %s",
            topic,
            len(payload),
            rejected.reason,
            rejected.detail,
        )
        try:
            await asyncio.to_thread(
                self._ledger.reject,
                topic=topic,
                reason=rejected.reason.value,
                detail=rejected.detail,
                payload=payload,
                received_at=received_at,
            )
        except sqlite3.Error:
            self._metrics.store_errors.inc()
            log.exception("could not keep the rejected message on %s in the ledger", topic)
