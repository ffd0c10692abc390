"""Publishing the spool to the broker: birth and last will, QoS 1 batches deleted on PUBACK, reconnection.

The poll loop never waits for the broker: :meth:`Publisher.submit` only appends to the on-disk spool
(:mod:`agent.spool`), whose commits a background task schedules. Another task keeps one MQTT session up
(reconnecting with backoff and jitter while the broker is down, which is normal) and sends committed
batches, each with its `spool_id` and `seq`, keeping up to ``max_inflight`` publishes awaiting their PUBACK
at once so a long backlog drains fast; a batch leaves the spool only once acknowledged.

Replay rule: at each connection the committed batches split into the backlog (seq up to the last one
committed at connect) and live (committed since). Free publish slots go to live and backlog in turn,
each oldest first, so after an outage live readings arrive within a slot or two while the backlog
drains behind them. Spool events (evictions, corruption, a full disk) go out on the events topic first.

Between batches the same task republishes the retained online status with each meter's health and the
spool's state, so status and readings never race (an online status cannot overtake the offline one sent
on stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from pydantic import ValidationError

from agent.clock import now_ms
from agent.config import MqttSettings, SpoolSettings
from agent.spool import Spool, SpooledBatch, SpooledEvent
from kilowatch import __version__
from kilowatch.backoff import Backoff
from kilowatch.mqtt_contract import (
    SCHEMA_VERSION,
    Channel,
    ClockAnchor,
    GatewayEvent,
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
QUICK_RETRIES = 3
"""Reconnection attempts at ``reconnect_min_s`` before the wait starts doubling: a broker restart is over
in seconds."""
READ_CHUNK = 64
"""Batches read from the spool at a time, per stream."""
REFUSED_CREDENTIALS = {4, 5, 134, 135}
"""CONNACK codes for bad credentials: MQTT 3.1.1 (4, 5) and 5 (134, 135)."""


def refused_credentials(exc: Exception) -> bool:
    """Whether the broker turned us away for our user name or password. Only a refused connection says
    so: a publish on a lost connection carries paho's own code 4 ("not connected"), which is not CONNACK's."""
    from aiomqtt.exceptions import MqttConnectError

    if not isinstance(exc, MqttConnectError):
        return False
    code = exc.rc if isinstance(exc.rc, int) or exc.rc is None else exc.rc.value
    return code in REFUSED_CREDENTIALS


class _Stream:
    """Committed batches in seq order after a cursor, up to a limit (None: whatever gets committed)."""

    def __init__(self, spool: Spool, *, after: int, upto: int | None) -> None:
        self.spool = spool
        self.after = after
        self.upto = upto
        self.queue: deque[SpooledBatch] = deque()

    async def take(self) -> SpooledBatch | None:
        while not self.queue and (self.upto is None or self.after < self.upto):
            batches, after = await self.spool.read(self.after, upto=self.upto, limit=READ_CHUNK)
            if after == self.after:  # nothing more committed yet
                break
            self.queue.extend(batches)
            self.after = after
        return self.queue.popleft() if self.queue else None


class _Replay:
    """The next batch to send: live and backlog in turn (the module's replay rule)."""

    def __init__(self, spool: Spool) -> None:
        boundary = spool.last_seq
        self.streams = [_Stream(spool, after=boundary, upto=None), _Stream(spool, after=-1, upto=boundary)]

    async def next(self) -> SpooledBatch | None:
        for _ in self.streams:
            stream = self.streams.pop(0)
            self.streams.append(stream)
            if (batch := await stream.take()) is not None:
                return batch
        return None


class Publisher:
    """The agent's MQTT side, as an async context manager that owns its background tasks.

    Args:
        spool: Where batches wait; None: a private in-memory one (not durable, for tools and tests). The
            publisher schedules its commits and flushes it on close; the caller closes it.
        max_inflight: Publishes awaiting their PUBACK at once.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        site: str,
        gateway: str,
        spool: Spool | None = None,
        meters: Sequence[str] = (),
        max_inflight: int = 16,
        publish_timeout_s: float = 10.0,
        flush_timeout_s: float = 5.0,
        health: Callable[[], Mapping[str, MeterHealth]] | None = None,
        health_interval_s: float = 0.0,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        if health_interval_s < 0:
            raise ValueError(f"health_interval_s must be 0 (never) or more, got {health_interval_s}")
        self.settings = settings
        self.site = site
        self.gateway = gateway
        self.spool = spool or Spool(SpoolSettings(path=Path(":memory:")), boot_id=None)
        self.meters = list(meters)
        self.max_inflight = max_inflight
        self.publish_timeout_s = publish_timeout_s
        self.flush_timeout_s = flush_timeout_s
        self.health = health
        """Each meter's health now, for the online status; None: statuses carry none."""
        self.health_interval_s = health_interval_s
        """Seconds between republishing the online status with health; 0: only the birth message."""
        self.readings_topic = topic(site, gateway, Channel.READINGS, root=settings.topic_root)
        self.status_topic = topic(site, gateway, Channel.STATUS, root=settings.topic_root)
        self.events_topic = topic(site, gateway, Channel.EVENTS, root=settings.topic_root)
        self.published = 0
        """Batches the broker acknowledged."""
        self.connected = False
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.clock_anchor: ClockAnchor | None = None
        """This boot's clock anchor, carried by every online status once the clock is synchronised."""
        self._status_changed = False
        self._own_from = self.spool.last_seq + 1
        """The first seq this process spools: earlier batches may predate a change of the contract, and
        are checked against it before they are sent; later ones were built to it, and are sent as stored."""

    @property
    def pending(self) -> int:
        """Batches waiting for the broker."""
        return self.spool.status().pending_batches

    def set_clock_anchor(self, anchor: ClockAnchor) -> None:
        """Carry `anchor` in the online status from now on; the status goes out at once, so the
        collector can re-date readings it holds from before the clock was synchronised."""
        self.clock_anchor = anchor
        self._status_changed = True
        self._wakeup.set()

    def submit(self, readings: Sequence[Reading]) -> int | None:
        """Append one batch to the spool; its seq, or None when the spool could not take it (see
        :meth:`agent.spool.Spool.append`). Never blocks, never waits for the broker."""
        return self.spool.append(readings)

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._run(), name="kilowatch-publisher"),
            asyncio.create_task(self._commit(), name="kilowatch-spool-commit"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Finish the publishes in flight and send the offline status if the broker lets us in time,
        then stop and commit the spool."""
        if not self._tasks:
            return
        (run, commit), self._tasks = self._tasks, []
        self._stop.set()
        self._wakeup.set()
        await asyncio.wait({run}, timeout=self.flush_timeout_s)
        for task in (run, commit):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
        if pending := self.pending:
            log.info("stopped with %d batches in the spool, sent after the next start", pending)

    async def flush(self) -> None:
        """Commit the spool now, and send what that made publishable."""
        if await self.spool.flush():
            self._wakeup.set()

    async def _commit(self) -> None:
        """Commit the spool when due."""
        while True:
            await self.spool.wait_due()
            try:
                await self.flush()
            except Exception:  # the spool logs what it can handle; keep committing whatever else happens
                log.exception("spool %s: commit failed", self.spool.path)

    def _status(self, state: GatewayState) -> bytes:
        """The status message; only an online one carries health and the spool (the last will is
        written at connect)."""
        online = state is GatewayState.ONLINE
        return (
            GatewayStatus(
                schema_version=SCHEMA_VERSION,
                site=self.site,
                gateway=self.gateway,
                state=state,
                ts=now_ms(),
                agent_version=__version__,
                meters=self.meters,
                health=dict(self.health()) if online and self.health is not None else None,
                spool=self.spool.status() if online else None,
                clock_anchor=self.clock_anchor if online else None,
            )
            .model_dump_json()
            .encode()
        )

    def _client(self) -> aiomqtt.Client:
        import aiomqtt

        client = self.settings.client(
            identifier=self.settings.client_id or f"kilowatch-{self.site}-{self.gateway}",
            will=aiomqtt.Will(
                self.status_topic, self._status(GatewayState.OFFLINE), qos=QOS_AT_LEAST_ONCE, retain=True
            ),
            timeout=self.publish_timeout_s,
        )
        client.pending_calls_threshold = (
            self.max_inflight + 2
        )  # our window, a status and an event: no warning
        return client

    async def _run(self) -> None:
        """Keep a session up until asked to stop; the broker being down is normal, not fatal."""
        import aiomqtt

        backoff = Backoff(
            first_s=self.settings.reconnect_min_s, max_s=self.settings.reconnect_max_s, quick=QUICK_RETRIES
        )
        where = self.settings.address
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
                if refused_credentials(exc):
                    log.error(
                        "MQTT broker %s refused our credentials (%s): check mqtt.username and "
                        "mqtt.password; retrying in %.1f s",
                        where,
                        exc,
                        delay,
                    )
                else:
                    log.warning(
                        "MQTT broker %s unavailable (%s); %d batches in the spool; retrying in %.1f s",
                        where,
                        exc,
                        self.pending,
                        delay,
                    )
            except Exception:  # a bug must not end publishing silently while polling goes on
                delay = backoff.next_delay()
                log.exception("publisher: unexpected error; reconnecting in %.1f s", delay)
            finally:
                self.connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Birth message, then events and batches as they are committed (and the status every health
        interval) until stopped; offline status on a clean stop."""
        import aiomqtt

        loop = asyncio.get_running_loop()
        await self._publish_online(client)
        status_due = loop.time() + self.health_interval_s
        replay = _Replay(self.spool)
        inflight: set[asyncio.Task[None]] = set()
        sent_events: set[int] = set()
        try:
            while True:
                self._wakeup.clear()
                for task in [t for t in inflight if t.done()]:
                    inflight.discard(task)
                    task.result()  # a lost connection ends the session; the spool still has the batch
                if self._stop.is_set():
                    if inflight:
                        await asyncio.wait(inflight)
                        continue
                    return
                if self.spool.has_events:
                    await self._send_events(client, sent_events)
                while len(inflight) < self.max_inflight and (batch := await replay.next()) is not None:
                    task = asyncio.create_task(self._send_batch(client, batch))
                    task.add_done_callback(lambda _: self._wakeup.set())
                    inflight.add(task)
                if self._status_changed or (self.health_interval_s and loop.time() >= status_due):
                    self._status_changed = False
                    await self._publish_online(client)
                    status_due = loop.time() + self.health_interval_s
                with contextlib.suppress(TimeoutError):
                    wait = status_due - loop.time() if self.health_interval_s else None
                    await asyncio.wait_for(self._wakeup.wait(), wait)
        finally:
            for task in inflight:
                task.cancel()
            if self._stop.is_set():
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(
                        self.status_topic,
                        self._status(GatewayState.OFFLINE),
                        qos=QOS_AT_LEAST_ONCE,
                        retain=True,
                        timeout=2,
                    )

    def _batch_message(self, batch: SpooledBatch) -> bytes:
        """The :class:`ReadingsBatch` of a spooled batch. One this process spooled is its stored readings
        in the envelope, as they are (no model objects: this runs every cycle); an older one is checked
        against the contract first (ValidationError)."""
        envelope = ReadingsBatch.model_construct(
            schema_version=1,
            site=self.site,
            gateway=self.gateway,
            seq=batch.seq,
            spool_id=self.spool.spool_id,
            sent_at=now_ms(),
            boot_id=batch.boot_id,
            readings=[],
        )
        if batch.seq < self._own_from:
            return (
                ReadingsBatch.model_validate(envelope.model_dump() | {"readings": batch.readings})
                .model_dump_json()
                .encode()
            )
        head = envelope.model_dump_json(exclude={"readings"}).encode()
        return head[:-1] + b',"readings":' + batch.payload + b"}"

    async def _send_batch(self, client: aiomqtt.Client, batch: SpooledBatch) -> None:
        try:
            message = self._batch_message(batch)
        except ValidationError as exc:  # would block the queue at every start: keep it aside, go on
            log.error(
                "spool %s: batch %d does not fit the MQTT contract (%s); kept in its unpublishable table",
                self.spool.path,
                batch.seq,
                exc.errors(include_input=False)[:3],
            )
            await asyncio.to_thread(self.spool.set_aside, batch.seq, str(exc))
            return
        await client.publish(self.readings_topic, message, qos=QOS_AT_LEAST_ONCE)
        self.spool.ack(batch.seq)
        self.published += 1

    async def _send_events(self, client: aiomqtt.Client, sent: set[int]) -> None:
        for event in await self.spool.events():
            if event.id is None or event.id in sent:
                continue
            await client.publish(self.events_topic, self._event(event), qos=QOS_AT_LEAST_ONCE)
            self.spool.ack_event(event.id)
            sent.add(event.id)

    def _event(self, event: SpooledEvent) -> bytes:
        return (
            GatewayEvent(
                schema_version=SCHEMA_VERSION,
                site=self.site,
                gateway=self.gateway,
                ts=event.ts,
                kind=event.kind,
                readings=event.readings,
                oldest_ts=event.oldest_ts,
                newest_ts=event.newest_ts,
                detail=event.detail,
            )
            .model_dump_json()
            .encode()
        )

    async def _publish_online(self, client: aiomqtt.Client) -> None:
        await client.publish(
            self.status_topic, self._status(GatewayState.ONLINE), qos=QOS_AT_LEAST_ONCE, retain=True
        )
