"""Alerts: what people act on, made from detectors' findings and kept in the ledger's SQLite file.

Lifecycle: open -> acknowledged -> resolved, resolved automatically when a finding says its condition
cleared (``end_ms``); ``silenced_until`` holds back notifications, not the alert. One active (open or
acknowledged) alert per (site, meter, detector, rule), enforced by a partial unique index: a repeat
updates it, and later data about the occurrence a resolved alert ended with (a truer end, more waste)
revise it rather than being taken for a replay. Applying a finding is idempotent, so detectors that replay history after a restart, a
backlog or a backfill never duplicate an alert nor notify twice.

The rows are kept by :class:`collector.store.AlertLedger`, on a connection of its own. Notifications are
written to the outbox in the transaction that opens or resolves an alert, one row per channel, so a
restart loses none; :mod:`collector.notifiers` drains it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field

from collector.config import AlertSettings
from collector.detectors.findings import Detector, Finding
from collector.store import Alert, AlertLedger, AlertQuery, AlertStatus, AlertTransaction, NotificationRow
from collector.store.connection import Closing, Location
from kilowatch.timebase import DAY_MS, VIETNAM_TZ, day_number, day_start_ms, utc_datetime

Clock = Callable[[], int]
"""Wall-clock time in UTC ms; tests pass a fixed one."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ChangeKind(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    RESOLVED = "resolved"
    UNCHANGED = "unchanged"


def messages(alert: Alert) -> tuple[str, str]:
    """(Vietnamese, English): the detector's words, the cost, and a note when it was raised late."""
    kwh, vnd = alert.wasted_kwh, alert.cost_vnd
    vi = f"{alert.finding_vi} Lãng phí {kwh:.1f} kWh, khoảng {vnd_vi(vnd)}."
    en = f"{alert.finding_en} Wasted {kwh:.1f} kWh, about {vnd_en(vnd)}."
    if alert.raised_late:
        detected, raised = local_text(alert.detected_at), local_text(alert.raised_at)
        vi += (
            f" Cảnh báo muộn: có thể phát hiện lúc {detected} nhưng chỉ được báo lúc {raised}"
            " (dữ liệu đến trễ, ví dụ sau khi mất kết nối)."
        )
        en += (
            f" Raised late: detectable at {detected} but reported only at {raised}"
            " (data arrived late, e.g. after an outage)."
        )
    return vi, en


def vnd_vi(amount: float) -> str:
    return f"{round(amount):,} đồng".replace(",", ".")


def vnd_en(amount: float) -> str:
    return f"{round(amount):,} VND"


def local_text(ms: int) -> str:
    return f"{utc_datetime(ms).astimezone(VIETNAM_TZ):%Y-%m-%d %H:%M} (UTC+7)"


class AlertOut(BaseModel):
    """An alert as the API and notifications show it: ISO 8601 times in UTC, cost and messages included."""

    id: int
    site: str
    meter: str
    detector: Detector
    rule: str
    status: AlertStatus
    start: datetime = Field(description="When the condition began (event time)")
    end: datetime | None = Field(description="When it cleared; null while it lasts")
    detected_at: datetime = Field(description="When it could first be detected (event time)")
    raised_at: datetime = Field(description="When the collector stored the alert")
    raised_late: bool = Field(
        description="Stored well after it could have been detected, e.g. from a backlog"
    )
    last_seen: datetime = Field(description="Event time of the newest finding")
    count: int = Field(description="Findings merged into this alert")
    wasted_kwh: float
    cost_vnd: float = Field(description="The detectors' cost of the waste at the site's tariff (sites file)")
    magnitude: float | None = Field(description="The rule's measure, e.g. kW above base load")
    message_vi: str
    message_en: str
    acknowledged_at: datetime | None
    silenced_until: datetime | None
    silence_reason: str | None
    resolved_at: datetime | None

    @classmethod
    def of(cls, alert: Alert) -> Self:
        message_vi, message_en = messages(alert)
        return cls(
            id=alert.id,
            site=alert.site,
            meter=alert.meter,
            detector=alert.detector,
            rule=alert.rule,
            status=alert.status,
            start=utc_datetime(alert.start_ms),
            end=_optional_datetime(alert.end_ms),
            detected_at=utc_datetime(alert.detected_at),
            raised_at=utc_datetime(alert.raised_at),
            raised_late=alert.raised_late,
            last_seen=utc_datetime(alert.last_seen),
            count=alert.count,
            wasted_kwh=alert.wasted_kwh,
            cost_vnd=alert.cost_vnd,
            magnitude=alert.magnitude,
            message_vi=message_vi,
            message_en=message_en,
            acknowledged_at=_optional_datetime(alert.acknowledged_at),
            silenced_until=_optional_datetime(alert.silenced_until),
            silence_reason=alert.silence_reason,
            resolved_at=_optional_datetime(alert.resolved_at),
        )


def _optional_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else utc_datetime(ms)


class AlertNotice(BaseModel):
    """What a channel is told when an alert opens or resolves (the webhook's JSON body)."""

    kind: Literal["alert.opened", "alert.resolved"]
    alert: AlertOut


@dataclass(frozen=True)
class AlertChange:
    """What :meth:`AlertStore.apply` did; only openings and resolutions are notified."""

    kind: ChangeKind
    alert: Alert

    @property
    def notifies(self) -> bool:
        return self.kind in (ChangeKind.OPENED, ChangeKind.RESOLVED)


class AlertError(Exception):
    """A lifecycle operation the store refuses; the message says why."""


class UnknownAlert(AlertError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"no alert with id {alert_id}")


class AlertConflict(AlertError):
    """The alert is not in a state that allows the operation."""


class InvalidSilence(AlertError):
    """The silence asked for makes no sense (e.g. it ends in the past)."""


class AlertStore(Closing):
    """Alerts' lifecycle and their notifications, kept in the ledger's file (:class:`AlertLedger`).

    Methods are synchronous and serialised by the ledger's lock; async callers use ``asyncio.to_thread``.

    Args:
        where: The ledger (a SQLite file or a PostgreSQL database); the alert tables are created if missing.
        settings: Lateness threshold used by :meth:`apply`.
        channels: Names of the notification channels configured; each notification gets a row per channel.
        clock: Wall-clock time, UTC ms.
    """

    def __init__(
        self,
        where: Path | str | Location,
        *,
        settings: AlertSettings | None = None,
        channels: Sequence[str] = (),
        clock: Clock = wall_clock_ms,
    ) -> None:
        self._settings = settings or AlertSettings()
        self._channels = tuple(channels)
        self._clock = clock
        self._ledger = AlertLedger(where)

    def close(self) -> None:
        self._ledger.close()

    def apply(self, finding: Finding) -> AlertChange:
        """Open, update or resolve the alert of the finding's (site, meter, detector, rule)."""
        now = self._clock()
        key = (finding.site, finding.meter, finding.detector, finding.rule)
        with self._ledger.transaction() as tx:
            active = tx.active(*key)
            if active is None:
                resolved = tx.resolved_occurrence(*key, finding.start_ms)
                if resolved is not None:
                    kind = self._revise(tx, resolved, finding, now)
                    if kind is ChangeKind.UNCHANGED:
                        return AlertChange(kind, resolved)
                    alert_id = resolved.id
                else:
                    alert_id = tx.insert(self._new(finding, now))
                    kind = ChangeKind.RESOLVED if finding.end_ms is not None else ChangeKind.OPENED
            else:
                alert_id = active.id
                kind = self._merge(tx, active, finding, now)
            alert = tx.get(alert_id)
            assert alert is not None
            change = AlertChange(kind, alert)
            if change.notifies:
                notice = AlertNotice(
                    kind="alert.opened" if kind is ChangeKind.OPENED else "alert.resolved",
                    alert=AlertOut.of(alert),
                )
                due = max(now, alert.silenced_until or now)
                tx.notify(self._channels, notice.kind, notice.model_dump_json(), due, alert_id)
            return change

    def _new(self, finding: Finding, now: int) -> Alert:
        ended = finding.end_ms is not None
        return Alert(
            id=0,
            site=finding.site,
            meter=finding.meter,
            detector=finding.detector,
            rule=finding.rule,
            status=AlertStatus.RESOLVED if ended else AlertStatus.OPEN,
            start_ms=finding.start_ms,
            end_ms=finding.end_ms,
            detected_at=finding.detected_at,
            raised_at=now,
            raised_late=now - finding.detected_at > self._settings.late_after_s * 1000,
            last_seen=finding.detected_at,
            count=1,
            occurrence_start_ms=finding.start_ms,
            occurrence_kwh=finding.wasted_kwh,
            prior_kwh=0,
            occurrence_vnd=finding.cost_vnd,
            prior_vnd=0,
            magnitude=finding.magnitude,
            finding_en=finding.message_en,
            finding_vi=finding.message_vi,
            acknowledged_at=None,
            silenced_until=None,
            silence_reason=None,
            resolved_at=now if ended else None,
        )

    def _revise(self, tx: AlertTransaction, alert: Alert, finding: Finding, now: int) -> ChangeKind:
        """A finding of the occurrence a resolved alert ended with. One that ends no earlier revises it:
        later data can show the condition lasted longer than the data judged before (a truer end, more
        waste); not notified again. One still open, or ending earlier, is a replay of an older state:
        nothing changes."""
        if finding.end_ms is None or alert.end_ms is None or finding.end_ms < alert.end_ms:
            return ChangeKind.UNCHANGED
        if self._merge(tx, alert, finding, now) is ChangeKind.UNCHANGED:
            return ChangeKind.UNCHANGED
        return ChangeKind.UPDATED

    def _merge(self, tx: AlertTransaction, alert: Alert, finding: Finding, now: int) -> ChangeKind:
        """Fold a repeat into the active alert. A finding of the current occurrence carries its waste so
        far; a newer occurrence adds to the total; an older one (a replay) changes nothing."""
        if finding.start_ms < alert.occurrence_start_ms:
            return ChangeKind.UNCHANGED
        new_occurrence = finding.start_ms > alert.occurrence_start_ms
        prior = alert.prior_kwh + alert.occurrence_kwh if new_occurrence else alert.prior_kwh
        prior_vnd = alert.prior_vnd + alert.occurrence_vnd if new_occurrence else alert.prior_vnd
        kwh = finding.wasted_kwh if new_occurrence else max(alert.occurrence_kwh, finding.wasted_kwh)
        vnd = finding.cost_vnd if new_occurrence else max(alert.occurrence_vnd, finding.cost_vnd)
        ended = finding.end_ms is not None
        updated = alert.model_copy(
            update={
                "status": AlertStatus.RESOLVED if ended else alert.status,
                "end_ms": finding.end_ms,
                "last_seen": max(alert.last_seen, finding.detected_at),
                "occurrence_start_ms": finding.start_ms,
                "occurrence_kwh": kwh,
                "prior_kwh": prior,
                "occurrence_vnd": vnd,
                "prior_vnd": prior_vnd,
                "magnitude": finding.magnitude,
                "finding_en": finding.message_en,
                "finding_vi": finding.message_vi,
            }
        )
        if updated == alert:
            return ChangeKind.UNCHANGED
        tx.merge(updated.model_copy(update={"count": alert.count + 1, "resolved_at": now if ended else None}))
        if ended:  # one notice says it all: an opening still waiting (silenced, channel down) is dropped
            tx.drop_notifications(alert.id, "alert.opened")
            return ChangeKind.RESOLVED
        return ChangeKind.UPDATED

    def acknowledge(self, alert_id: int) -> Alert:
        """Someone is on it: open -> acknowledged."""
        with self._ledger.transaction() as tx:
            alert = _active(tx, alert_id, "acknowledge")
            if alert.status is AlertStatus.ACKNOWLEDGED:
                raise AlertConflict(f"alert {alert_id} is already acknowledged")
            tx.acknowledge(alert_id, self._clock())
            return _get(tx, alert_id)

    def silence(self, alert_id: int, *, until_ms: int, reason: str) -> Alert:
        """Hold back the alert's notifications until `until_ms` (those waiting are postponed too)."""
        now = self._clock()
        if until_ms <= now:
            raise InvalidSilence(f"'until' ({local_text(until_ms)}) is not in the future")
        with self._ledger.transaction() as tx:
            _active(tx, alert_id, "silence")
            tx.silence(alert_id, until_ms, reason)
            return _get(tx, alert_id)

    def get(self, alert_id: int) -> Alert:
        alert = self._ledger.get(alert_id)
        if alert is None:
            raise UnknownAlert(alert_id)
        return alert

    def alerts(self, query: AlertQuery) -> list[Alert]:
        """Alerts matching `query`, newest first."""
        return self._ledger.alerts(query)

    def sites_for_digest(self, day: date) -> list[str]:
        """Sites with an active alert or one that began on `day` (Vietnam time)."""
        start = day_start_ms(day_number(day))
        return self._ledger.sites_with_alerts(start, start + DAY_MS)

    def enqueue_digests(self, day: date, bodies: list[str]) -> bool:
        """Queue the digests of `day` (one body per site) unless that day's were queued before; together
        with the record that they were, so a restart neither skips nor repeats a day."""
        with self._ledger.transaction() as tx:
            if not tx.mark_digest_day(day.isoformat(), self._clock()):
                return False
            for body in bodies:
                tx.notify(self._channels, "digest", body, self._clock())
            return True

    def enqueue_monthly_reports(self, month: str, channel: str, bodies: list[str]) -> bool:
        """Queue `month`'s report e-mails on `channel` unless they were queued before; together with the
        record that they were, so a restart neither skips nor repeats a month."""
        with self._ledger.transaction() as tx:
            if not tx.mark_report_month(month, self._clock()):
                return False
            for body in bodies:
                tx.notify([channel], "monthly_report", body, self._clock())
            return True

    def due(self, channel: str, *, limit: int = 50) -> list[NotificationRow]:
        """The channel's notifications that may be sent now, oldest first."""
        return self._ledger.due(channel, self._clock(), limit)

    def next_due(self, channel: str) -> int | None:
        """When the channel's next waiting notification becomes due (UTC ms), if any."""
        return self._ledger.next_due(channel)

    def delivered(self, row_id: int) -> None:
        self._ledger.delivered(row_id)

    def failed(self, row_id: int) -> None:
        self._ledger.failed(row_id)


def _get(tx: AlertTransaction, alert_id: int) -> Alert:
    alert = tx.get(alert_id)
    if alert is None:
        raise UnknownAlert(alert_id)
    return alert


def _active(tx: AlertTransaction, alert_id: int, action: str) -> Alert:
    alert = _get(tx, alert_id)
    if alert.status is AlertStatus.RESOLVED:
        raise AlertConflict(f"alert {alert_id} is resolved; there is nothing to {action}")
    return alert
