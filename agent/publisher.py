"""Publishing readings to the broker: birth and last will, ordered QoS 1 batches, reconnection.

The poll loop never waits for the broker: :meth:`Publisher.submit` only queues. A background task keeps
one MQTT v5 session up (reconnecting with backoff while the broker is down) and sends queued batches in
order, removing each only after its PUBACK. Between batches the same task republishes the retained online
status with each meter's health, so status and readings never race (an online status cannot overtake the
offline one sent on stop). The queue is bounded in memory; when full, the oldest batch
is evicted, counted and logged (an on-disk spool replaces this queue later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from agent.clock import now_ms
from agent.config import MqttSettings
from kilowatch import __version__
from kilowatch.backoff import Backoff
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    Channel,
    GatewayState,
    GatewayStatus,
    MeterHealth,
    Reading,
    ReadingsBatch,
    topic,
)

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE = 1


class Publisher:
    """The agent's MQTT side, as an async context manager that owns its background task."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        site: str,
        gateway: str,
        meters: Sequence[str] = (),
        queue_size: int = 10_000,
        publish_timeout_s: float = 10.0,
        flush_timeout_s: float = 5.0,
        health: Callable[[], Mapping[str, MeterHealth]] | None = None,
        health_interval_s: float = 0.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if health_interval_s < 0:
            raise ValueError(f"health_interval_s must be 0 (never) or more, got {health_interval_s}")
        self.settings = settings
        self.site = site
        self.gateway = gateway
        self.meters = list(meters)
        self.publish_timeout_s = publish_timeout_s
        self.flush_timeout_s = flush_timeout_s
        self.health = health
        """Each meter's health now, for the online status; None: statuses carry none."""
        self.health_interval_s = health_interval_s
        """Seconds between republishing the online status with health; 0: only the birth message."""
        self.readings_topic = topic(site, gateway, Channel.READINGS, root=settings.topic_root)
        self.status_topic = topic(site, gateway, Channel.STATUS, root=settings.topic_root)
        self.evicted = 0
        """Batches dropped because the queue was full."""
        self.published = 0
        """Batches the broker acknowledged."""
        self.connected = False
        self._queue: deque[ReadingsBatch] = deque(maxlen=queue_size)
        self._next_seq = 0
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Batches waiting for the broker."""
        return len(self._queue)

    def submit(self, readings: Sequence[Reading]) -> ReadingsBatch:
        """Queue one batch (the next seq) for publishing; never blocks, never waits for the broker.

        `sent_at` is set again when the batch actually goes out.
        """
        batch = ReadingsBatch(
            schema_version=SCHEMA_VERSION,
            site=self.site,
            gateway=self.gateway,
            seq=self._next_seq,
            sent_at=now_ms(),
            readings=list(readings),
        )
        self._next_seq += 1
        if len(self._queue) == self._queue.maxlen:
            dropped = self._queue[0]
            self.evicted += 1
            log.warning(
                "publish queue full (%d batches): dropped the oldest, seq %d (%d dropped so far)",
                self._queue.maxlen,
                dropped.seq,
                self.evicted,
            )
        self._queue.append(batch)
        self._wakeup.set()
        return batch

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="kilowatch-publisher")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Send what is queued and the offline status if the broker lets us in time, then stop."""
        if self._task is None:
            return
        self._stop.set()
        self._wakeup.set()
        task, self._task = self._task, None
        done, _ = await asyncio.wait({task}, timeout=self.flush_timeout_s)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._queue:
            log.warning(
                "stopped with %d unsent batches (seq %d and after)", len(self._queue), self._queue[0].seq
            )

    def _status(self, state: GatewayState) -> bytes:
        """The status message; only an online one carries health (the last will is written at connect)."""
        health = None
        if state is GatewayState.ONLINE and self.health is not None:
            health = dict(self.health())
        return (
            GatewayStatus(
                schema_version=SCHEMA_VERSION,
                site=self.site,
                gateway=self.gateway,
                state=state,
                ts=now_ms(),
                agent_version=__version__,
                meters=self.meters,
                health=health,
            )
            .model_dump_json()
            .encode()
        )

    def _client(self) -> aiomqtt.Client:
        import aiomqtt

        return self.settings.client(
            identifier=self.settings.client_id or f"kilowatch-{self.site}-{self.gateway}",
            will=aiomqtt.Will(
                self.status_topic, self._status(GatewayState.OFFLINE), qos=QOS_AT_LEAST_ONCE, retain=True
            ),
            timeout=self.publish_timeout_s,
        )

    async def _run(self) -> None:
        """Keep a session up until asked to stop; the broker being down is normal, not fatal."""
        import aiomqtt

        backoff = Backoff(first_s=self.settings.reconnect_min_s, max_s=self.settings.reconnect_max_s)
        where = f"{self.settings.host}:{self.settings.port}"
        while not self._stop.is_set():
            try:
                async with self._client() as client:
                    self.connected = True
                    backoff.reset()
                    log.info("connected to MQTT broker %s", where)
                    await self._session(client)
                    return
            except aiomqtt.MqttError as exc:
                delay = backoff.next_delay()
                log.warning(
                    "MQTT broker %s unavailable (%s); %d batches queued; retrying in %.1f s",
                    where,
                    exc,
                    len(self._queue),
                    delay,
                )
            finally:
                self.connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Birth message, then send batches in order (and the status every health interval) until
        stopped; offline status on a clean stop."""
        import aiomqtt

        loop = asyncio.get_running_loop()
        await self._publish_online(client)
        status_due = loop.time() + self.health_interval_s
        try:
            while True:
                self._wakeup.clear()
                while self._queue:
                    batch = self._queue[0]
                    payload = batch.model_copy(update={"sent_at": now_ms()}).model_dump_json()
                    await client.publish(self.readings_topic, payload.encode(), qos=QOS_AT_LEAST_ONCE)
                    if self._queue and self._queue[0] is batch:  # not evicted while we waited for PUBACK
                        self._queue.popleft()
                    self.published += 1
                if self._stop.is_set():
                    return
                if self.health_interval_s and loop.time() >= status_due:
                    await self._publish_online(client)
                    status_due = loop.time() + self.health_interval_s
                with contextlib.suppress(TimeoutError):
                    wait = status_due - loop.time() if self.health_interval_s else None
                    await asyncio.wait_for(self._wakeup.wait(), wait)
        finally:
            if self._stop.is_set():
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(
                        self.status_topic,
                        self._status(GatewayState.OFFLINE),
                        qos=QOS_AT_LEAST_ONCE,
                        retain=True,
                        timeout=2,
                    )

    async def _publish_online(self, client: aiomqtt.Client) -> None:
        await client.publish(
            self.status_topic, self._status(GatewayState.ONLINE), qos=QOS_AT_LEAST_ONCE, retain=True
        )
