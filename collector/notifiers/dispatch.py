"""Drains the alert outbox into the channels and queues the daily digests; the one place findings enter.

Each channel has its own task, so a webhook that is down does not hold back e-mail. A channel sends its
rows in order; on a failure it waits (exponential backoff with jitter) and tries the same row again.
Between rows it sleeps until woken by a new notice, until the next silenced notice is due, or at most
``poll_s`` (notices may come from another process writing the same ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from collector.alerts import AlertChange, AlertStore, Clock, wall_clock_ms
from collector.config import NotifySettings
from collector.detectors.findings import Finding
from collector.notifiers.channel import Channel, NotifyError
from collector.notifiers.digest import last_digest_ms, local_day_before, next_digest_ms, queue_digests
from collector.notifiers.monthly import (
    EMAIL,
    MonthlyReporter,
    last_monthly_ms,
    month_before_ms,
    next_monthly_ms,
    queue_monthly_reports,
)
from collector.notifiers.smtp import EmailChannel
from collector.notifiers.webhook import WebhookChannel
from collector.reports import Reporter
from collector.store import NotificationRow
from kilowatch.backoff import Backoff

log = logging.getLogger(__name__)

BATCH = 50
"""Outbox rows read at a time per channel."""


def channels(settings: NotifySettings) -> list[Channel]:
    """The channels the configuration enables."""
    enabled: list[Channel] = []
    if settings.webhook is not None:
        enabled.append(WebhookChannel(settings.webhook))
    if settings.email is not None:
        enabled.append(EmailChannel(settings.email))
    return enabled


class Notifications:
    """Applies findings to the alert store and delivers what it queues.

    Args:
        store: Whose outbox to drain; it must have been created with these channels' names.
        channels: Where to deliver.
        settings: Retry policy, polling period, digest time.
        reporter: Each site's report of the day, for its digest (with detection).
        monthly: Each unit's monthly report e-mail (with units in the sites file).
        clock: Wall-clock time, UTC ms.
    """

    def __init__(
        self,
        *,
        store: AlertStore,
        channels: Sequence[Channel],
        settings: NotifySettings,
        reporter: Reporter | None = None,
        monthly: MonthlyReporter | None = None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self._store = store
        self._reporter = reporter
        self._monthly = monthly
        self._channels = list(channels)
        self._settings = settings
        self._clock = clock
        self._wakes = {channel.name: asyncio.Event() for channel in self._channels}

    async def submit(self, finding: Finding) -> AlertChange:
        """Apply a detector's finding (on a thread: it never blocks the event loop); notify if it opened or
        resolved an alert."""
        change = await asyncio.to_thread(self._store.apply, finding)
        if change.notifies:
            self.wake()
        return change

    def wake(self) -> None:
        """Something was queued: look at the outbox now."""
        for event in self._wakes.values():
            event.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        async with asyncio.TaskGroup() as group:
            for channel in self._channels:
                group.create_task(self._drain(channel), name=f"notify-{channel.name}")
            if self._settings.digest_at is not None and self._channels:
                group.create_task(self._digests(), name="daily-digest")
            emails = any(channel.name == EMAIL for channel in self._channels)
            if self._settings.monthly_report_at is not None and self._monthly is not None and emails:
                group.create_task(self._monthly_reports(), name="monthly-report")

    async def _drain(self, channel: Channel) -> None:
        backoff = Backoff(first_s=self._settings.retry_min_s, max_s=self._settings.retry_max_s)
        wake = self._wakes[channel.name]
        while True:
            wake.clear()
            rows = await asyncio.to_thread(self._store.due, channel.name, limit=BATCH)
            if await self._send(channel, rows, backoff) and len(rows) < BATCH:
                await self._idle(channel.name, wake)

    async def _send(self, channel: Channel, rows: list[NotificationRow], backoff: Backoff) -> bool:
        """Send `rows` in order; on the first failure wait out the backoff and return False."""
        for row in rows:
            try:
                await channel.send(row)
            except NotifyError as exc:
                await asyncio.to_thread(self._store.failed, row.id)
                delay = backoff.next_delay()
                log.warning(
                    "%s (notice %d, attempt %d); retrying in %.1f s", exc, row.id, row.attempts + 1, delay
                )
                await asyncio.sleep(delay)
                return False
            backoff.reset()
            await asyncio.to_thread(self._store.delivered, row.id)
        return True

    async def _idle(self, channel: str, wake: asyncio.Event) -> None:
        timeout = self._settings.poll_s
        next_due = await asyncio.to_thread(self._store.next_due, channel)
        if next_due is not None:
            timeout = min(timeout, max(0.0, (next_due - self._clock()) / 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)

    async def _digests(self) -> None:
        """At `digest_at` every day, the digest of the day before; at start, the last one if it is owed (the
        collector was down at its time)."""
        at = self._settings.digest_at
        assert at is not None
        due = last_digest_ms(self._clock(), at)
        while True:
            day = local_day_before(due)
            sites = await asyncio.to_thread(queue_digests, self._store, day, self._reporter)
            if sites is not None:
                log.info("daily digest of %s queued for %d site(s)", day, sites)
                self.wake()
            now = self._clock()
            due = next_digest_ms(now, at)
            await asyncio.sleep((due - now) / 1000)

    async def _monthly_reports(self) -> None:
        """On the 1st of every month at `monthly_report_at`, the month before's e-mails; at start, the last
        ones if they are owed (the collector was down at their time)."""
        at, monthly = self._settings.monthly_report_at, self._monthly
        assert at is not None
        assert monthly is not None
        due = last_monthly_ms(self._clock(), at)
        while True:
            year, month = month_before_ms(due)
            queued = await asyncio.to_thread(queue_monthly_reports, self._store, year, month, monthly)
            if queued is not None:
                log.info("monthly report of %04d-%02d queued for %d unit(s)", year, month, queued)
                self.wake()
            now = self._clock()
            due = next_monthly_ms(now, at)
            await asyncio.sleep((due - now) / 1000)
