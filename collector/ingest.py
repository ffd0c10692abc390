"""MQTT ingestion: subscribe to every gateway's readings, status and events; validate; commit; acknowledge.

Nothing is lost between the broker and the ledger: the collector keeps a persistent session (see
:mod:`collector.mqtt_acks`) and acknowledges a message only after the ledger transaction holding it has
committed. Messages are committed in groups (whatever has arrived, up to half the receive maximum) and
then acknowledged in order: one transaction per group is what makes throughput, and it lets the broker
send the next group meanwhile. A collector that dies before committing gets the group again; the ledger
skips what it already has, and the metrics count what each commit inserted (counted in the worker thread
right after it, so a connection lost meanwhile cannot skip them): ``kilowatch_collector_readings_stored_total``
stays true across redeliveries. The client holds at most the receive maximum of received, unacknowledged
messages: it stops reading the socket there (see :mod:`collector.mqtt_acks`), as the broker may send
more; so the session's set-up waits for its SUBACK without a timeout (see :meth:`Ingestor._subscribe`).

When the ledger cannot commit whatever it is given (a full disk, an I/O error:
:class:`~collector.store.LedgerUnwritable`), ingestion pauses: nothing is acknowledged, the group is tried
again with backoff, the client reads no further than its receive maximum, so the broker keeps the rest;
/healthz says so. Once the disk has room again it goes on where it stopped and loses nothing.

A bad message is logged (reason, never the payload), counted by reason and kept in the ledger's
``rejected`` table (an excerpt, within a byte budget and a retention; past
``limits.rejected_stored_per_minute`` a gateway's refused messages are only counted). A payload larger than
``limits.max_payload_bytes`` is refused before it is parsed. No message stops the loop: one whose storing
fails with anything else than an unwritable ledger (a bug, a value SQLite refuses) makes the group be
stored again in halves until it is alone, and is dead-lettered (reason ``unprocessable``) and
acknowledged. The broker may be down when the collector starts or go away later: the loop reconnects with
exponential backoff and jitter, and the rest of the collector (the API) keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiomqtt

from collector import mqtt_acks
from collector.config import LimitsSettings, MqttSettings
from collector.metrics import CollectorMetrics, RejectReason
from collector.store import (
    DatabaseError,
    IngestResult,
    Item,
    Ledger,
    LedgerUnwritable,
    ReadingRejection,
    RejectedMessage,
)
from collector.validate import Rejected, parse_message
from kilowatch.backoff import Backoff
from kilowatch.mqtt_contract import Channel, GatewayEvent, GatewayEventKind, ReadingsBatch, subscription

log = logging.getLogger(__name__)

_SUBSCRIBE_FAILED = 0x80
_MAX_DETAIL = 500
"""Characters of an unexpected error's text kept as a dead letter's detail."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _as_bytes(payload: object) -> bytes:
    """aiomqtt types payloads loosely; what arrives from the broker is bytes."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


def _source(topic: str, root: str) -> str:
    """Who sent a message, as far as the topic tells: ``<site>/<gateway>`` under the root (the broker's ACL
    lets each gateway write only there), else the topic's first levels (bounded)."""
    levels = topic.removeprefix(root + "/").split("/", 2)
    return "/".join(levels[:2])[:200]


class _RejectRate:
    """Refused messages kept per source per minute: past `per_minute`, only counted (storage, logs and the
    ledger's writes stay bounded however fast a gateway sends garbage)."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._minute = -1
        self._counts: dict[str, int] = {}

    def admit(self, source: str, now_ms: int) -> bool:
        minute = now_ms // 60_000
        if minute != self._minute:
            self._minute = minute
            self._counts.clear()
        count = self._counts[source] = self._counts.get(source, 0) + 1
        if count == self._per_minute + 1:
            log.warning(
                "%s: more than %d refused messages this minute; further ones are counted, not kept nor logged",
                source,
                self._per_minute,
            )
        return count <= self._per_minute


@dataclass
class _Stored:
    """What storing a group did: the items committed and their results, and the refused messages only
    counted (their gateway was over its rate)."""

    items: list[Item] = field(default_factory=list)
    results: list[IngestResult] = field(default_factory=list)
    unstored: list[str] = field(default_factory=list)
    """Reasons of the refused messages not kept."""


class Ingestor:
    """Consumes ``<root>/+/+/{readings,status,events}`` into the ledger.

    Args:
        settings: The broker, session and topic root.
        ledger: Where messages are stored (its sync methods run in a worker thread).
        metrics: Counters to update.
        on_commit: Called (without awaiting) after a commit that added rows to the TSDB outbox.
        limits: Payload size and the rate of refused messages kept (the ledger applies the others).
    """

    def __init__(
        self,
        *,
        settings: MqttSettings,
        ledger: Ledger,
        metrics: CollectorMetrics,
        on_commit: Callable[[], None] | None = None,
        limits: LimitsSettings = LimitsSettings(),  # noqa: B008 - frozen
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._metrics = metrics
        self._on_commit = on_commit
        self._max_payload = limits.max_payload_bytes
        self._reject_rate = _RejectRate(limits.rejected_stored_per_minute)
        self._group_max = max(1, settings.receive_maximum // 2)
        self._backoff = Backoff(first_s=settings.reconnect_min_s, max_s=settings.reconnect_max_s)
        self._ledger_backoff = Backoff(first_s=0.5, max_s=30.0)
        self.connected = False
        """True while subscribed to the broker (for /healthz)."""
        self.ledger_error: str | None = None
        """Why the ledger cannot commit, while ingestion is paused for it (for /healthz); else None."""

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._metrics.mqtt_connected.set(int(connected))

    async def run(self) -> None:
        """Forever: connect, subscribe, commit and acknowledge messages; on failure wait and retry."""
        await asyncio.to_thread(self.load_gauges)
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
            except* DatabaseError as group:
                reason = f"the ledger failed ({group.exceptions[0]}); nothing was acknowledged, the broker keeps it"
            finally:
                self._set_connected(False)
            wait = self._backoff.next_delay()
            log.warning(
                "MQTT broker %s unavailable (%s); retrying in %.1f s", self._settings.address, reason, wait
            )
            await asyncio.sleep(wait)

    def load_gauges(self) -> None:
        """Start the gauges from what the ledger holds; commits move them from there."""
        with self._ledger.reader() as reader:
            self._metrics.missing_batches.set(reader.missing_batches())
            for reason, count in reader.quarantine_counts().items():
                self._metrics.quarantined.labels(reason=reason.value).set(count)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Every channel in one SUBSCRIBE, waiting for its SUBACK without a timeout.

        The SUBACK comes behind whatever the broker sends the session first, and the client reads no
        further than its receive maximum ahead of the ledger's commits (paused indefinitely on a full
        disk). With a SUBSCRIBE per channel, the second SUBACK came behind thousands of queued messages and
        the client's 10 s timeout ended the session set-up, again at each reconnection. A lost connection
        still ends the wait: the consuming task fails and cancels it.
        """
        group = self._settings.share_group
        shared = "" if group is None else f"$share/{group.get_secret_value()}/"
        topics = [subscription(channel, root=self._settings.topic_root) for channel in Channel]
        granted = await client.subscribe([(shared + t, 1) for t in topics], timeout=math.inf)
        for topic, code in zip(topics, granted, strict=True):
            if code == _SUBSCRIBE_FAILED:
                named = topic if group is None else f"$share/<share_group>/{topic}"  # the group is a secret
                log.error("the broker refused the subscription to %s (check its ACL)", named)

    async def _consume(self, client: aiomqtt.Client) -> None:
        """Group what has arrived, commit it, then acknowledge it in order; repeat."""
        messages = client.messages
        while True:
            group = [await anext(messages)]
            while len(group) < self._group_max and len(messages):
                group.append(await anext(messages))
            await self._commit([(m.topic.value, _as_bytes(m.payload)) for m in group])
            for message in group:
                mqtt_acks.ack(client, message)

    async def _commit(self, received: Sequence[tuple[str, bytes]]) -> None:
        """Store a group; while the ledger cannot commit, keep it unacknowledged and try again with backoff."""
        while True:
            try:
                await self.store(received)
            except LedgerUnwritable as exc:
                self._metrics.store_errors.inc(len(received))
                wait = self._ledger_backoff.next_delay()
                if self.ledger_error is None:
                    log.error(
                        "the ledger cannot commit (%s): ingestion paused, nothing acknowledged (the broker keeps "
                        "the messages); trying again with backoff",
                        exc,
                    )
                    self._metrics.ledger_writable.set(0)
                self.ledger_error = str(exc)
                await asyncio.sleep(wait)
                continue
            if self.ledger_error is not None:
                log.info("the ledger commits again: ingestion resumed")
                self.ledger_error = None
                self._metrics.ledger_writable.set(1)
                self._ledger_backoff.reset()
            return

    async def store(self, received: Sequence[tuple[str, bytes]]) -> None:
        """Validate messages (topic, payload) and commit them in one transaction, in a worker thread.

        If the transaction fails for any other reason than an unwritable ledger, each half of the group is
        stored on its own (and so on), and a message that fails alone is dead-lettered (kept as refused,
        reason ``unprocessable``): one message never holds up the others, and costs a few transactions
        (halving), not one per message of its group.

        Raises :class:`LedgerUnwritable` when the ledger cannot commit (then nothing of the group is stored).
        """
        try:
            stored = await asyncio.to_thread(self._validate_and_store, received)
        except LedgerUnwritable:
            raise
        except Exception as exc:
            if len(received) > 1:
                log.debug(
                    "storing %d messages in one transaction failed (%s: %s); storing each half on its own",
                    len(received), type(exc).__name__, exc,
                )  # fmt: skip
                half = len(received) // 2
                await self.store(received[:half])
                await self.store(received[half:])
                return
            stored = await asyncio.to_thread(self._dead_letter, *received[0], exc)
        if self._on_commit is not None and any(r.outbox_rows for r in stored.results):
            self._on_commit()

    def _validate_and_store(self, received: Sequence[tuple[str, bytes]]) -> _Stored:
        received_at = _now_ms()
        stored = _Stored()
        root = self._settings.topic_root
        for topic, payload in received:
            try:
                if len(payload) > self._max_payload:
                    raise Rejected(
                        RejectReason.TOO_LARGE,
                        f"{len(payload)} bytes, more than limits.max_payload_bytes ({self._max_payload})",
                    )
                stored.items.append(parse_message(topic, payload, root=root))
            except Rejected as rejected:
                if self._reject_rate.admit(_source(topic, root), received_at):
                    stored.items.append(
                        RejectedMessage(topic, rejected.reason.value, rejected.detail, payload)
                    )
                else:
                    stored.unstored.append(rejected.reason.value)
        return self._commit_and_account(stored, received_at)

    def _commit_and_account(self, stored: _Stored, received_at: int) -> _Stored:
        """Commit the items, then count what the commit did, in this worker thread: a caller cancelled
        meanwhile (the connection lost while the commit ran, the messages redelivered later as duplicates)
        cannot skip the counting of what was stored."""
        before = self._ledger.readings_stored
        stored.results = self._ledger.store(stored.items, received_at=received_at)
        self._metrics.stored_readings.inc(self._ledger.readings_stored - before)
        for item, result in zip(stored.items, stored.results, strict=True):
            self._account(item, result)
        self._account_unstored(stored.unstored)
        return stored

    def _account_unstored(self, reasons: list[str]) -> None:
        """Refused messages only counted (their gateway was over its rate), by reason."""
        for reason in reasons:
            self._metrics.rejected.labels(reason=reason).inc()
        self._metrics.rejected_unstored.inc(len(reasons))

    def _dead_letter(self, topic: str, payload: bytes, exc: Exception) -> _Stored:
        """Keep a message that could not be stored as refused, with the error that stopped it (within its
        gateway's rate of refused messages kept, like any other)."""
        received_at = _now_ms()
        if not self._reject_rate.admit(_source(topic, self._settings.topic_root), received_at):
            self._account_unstored([RejectReason.UNPROCESSABLE.value])
            return _Stored()
        log.error("could not store a message on %s (%d bytes)", topic, len(payload), exc_info=exc)
        detail = f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL]
        item = RejectedMessage(topic, RejectReason.UNPROCESSABLE.value, detail, payload)
        return self._commit_and_account(_Stored([item]), received_at)

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
        for rejection, count in result.rejected_readings.items():
            m.rejected_readings.labels(reason=rejection.value).inc(count)
        for bad, count in result.bad_values.items():
            m.bad_values.labels(reason=bad.value).inc(count)
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
        if result.seq_jump is not None:
            log.warning(
                "%s: seq %d of spool %s is a new numbering (see /api/v1/gateways/events), not missing batches",
                where, item.seq, item.spool_id,
            )  # fmt: skip
        if foreign := result.rejected_readings.get(ReadingRejection.FOREIGN_METER):
            log.warning(
                "%s batch %d: %d readings of meters bound to another gateway refused (see "
                "/api/v1/gateways/events)",
                where, item.seq, foreign,
            )  # fmt: skip
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
