"""The alert lifecycle in the ledger's SQLite file: open, repeat, acknowledge, silence, resolve, raised late."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import psycopg
import pytest

from collector.alerts import (
    AlertConflict,
    AlertNotice,
    AlertStore,
    ChangeKind,
    InvalidSilence,
    UnknownAlert,
    messages,
)
from collector.detectors.findings import Detector
from collector.store import AlertQuery, AlertStatus
from tests.alert_support import FakeClock, finding, open_store
from tests.collector_support import at
from tests.ledger_support import LedgerAt, execute


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at(19, 31))


@pytest.fixture
def store(ledger_at: LedgerAt, clock: FakeClock) -> Iterator[AlertStore]:
    with open_store(ledger_at("kilowatch"), clock, channels=("webhook", "email")) as store:
        yield store


def test_a_finding_opens_an_alert_with_cost_and_both_languages(store: AlertStore) -> None:
    change = store.apply(finding(wasted_kwh=3.0))
    assert change.kind is ChangeKind.OPENED
    assert change.notifies
    alert = change.alert
    assert (alert.status, alert.site, alert.meter, alert.detector, alert.rule) == (
        AlertStatus.OPEN,
        "site1",
        "m1",
        Detector.AFTER_HOURS,
        "R4",
    )
    assert (alert.wasted_kwh, alert.cost_vnd, alert.count, alert.raised_late) == (3.0, 6000.0, 1, False)
    vi, en = messages(alert)
    assert vi == "6 kW vẫn chạy ngoài giờ làm việc. Lãng phí 3.0 kWh, khoảng 6.000 đồng."
    assert en == "6 kW left on after hours. Wasted 3.0 kWh, about 6,000 VND."


def test_an_alert_costs_what_its_findings_cost_with_no_flat_rate_added(store: AlertStore) -> None:
    alert = store.apply(finding(wasted_kwh=3.0, cost_vnd=9100.0)).alert
    assert (alert.wasted_kwh, alert.cost_vnd) == (3.0, 9100.0)
    assert store.apply(finding(wasted_kwh=4.0, cost_vnd=12000.0)).alert.cost_vnd == 12000.0
    assert store.apply(finding(start_ms=at(21), wasted_kwh=1.0, cost_vnd=0.0)).alert.cost_vnd == 12000.0


def test_a_repeat_updates_the_open_alert_and_an_identical_replay_changes_nothing(store: AlertStore) -> None:
    opened = store.apply(finding(wasted_kwh=3.0)).alert
    later = finding(wasted_kwh=5.0, detected_at=at(20))
    updated = store.apply(later)
    assert updated.kind is ChangeKind.UPDATED
    assert not updated.notifies
    assert updated.alert.id == opened.id
    assert (updated.alert.wasted_kwh, updated.alert.count, updated.alert.last_seen) == (5.0, 2, at(20))
    assert store.apply(later).kind is ChangeKind.UNCHANGED
    assert len(store.alerts(AlertQuery())) == 1


def test_a_new_occurrence_before_the_alert_resolves_adds_to_its_waste(store: AlertStore) -> None:
    store.apply(finding(start_ms=at(19), wasted_kwh=3.0))
    change = store.apply(finding(start_ms=at(21), wasted_kwh=2.0))
    assert (change.kind, change.alert.wasted_kwh) == (ChangeKind.UPDATED, 5.0)
    assert store.apply(finding(start_ms=at(19), wasted_kwh=9.0)).kind is ChangeKind.UNCHANGED


def test_one_open_alert_per_site_meter_detector_and_rule(store: AlertStore, ledger_at: LedgerAt) -> None:
    ids = {
        store.apply(f).alert.id
        for f in (
            finding(),
            finding(meter="m2"),
            finding(site="site2"),
            finding(detector=Detector.IDLE),
            finding(rule="R4b"),
            finding(wasted_kwh=4.0),
        )
    }
    assert len(ids) == 5
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
        execute(
            ledger_at("kilowatch"),
            "INSERT INTO alerts (site, meter, detector, rule, status, start_ms, detected_at, raised_at,"
            " raised_late, last_seen, count, occurrence_start_ms, occurrence_kwh, prior_kwh, occurrence_vnd,"
            " prior_vnd, finding_en, finding_vi)"
            " VALUES ('site1', 'm1', 'after_hours', 'R4', 'acknowledged', 0, 0, 0, ?, 0, 1, 0, 0, 0, 0, 0, '', '')",
            (False,),
        )


def test_the_condition_clearing_resolves_the_alert_and_a_later_one_opens_another(
    store: AlertStore, clock: FakeClock
) -> None:
    opened = store.apply(finding()).alert
    clock.now_ms = at(22)
    resolved = store.apply(finding(end_ms=at(21, 45), wasted_kwh=8.0))
    assert resolved.kind is ChangeKind.RESOLVED
    assert resolved.notifies
    assert (resolved.alert.id, resolved.alert.status) == (opened.id, AlertStatus.RESOLVED)
    assert (resolved.alert.end_ms, resolved.alert.resolved_at, resolved.alert.wasted_kwh) == (
        at(21, 45),
        at(22),
        8.0,
    )
    replay = store.apply(finding(wasted_kwh=3.0))
    assert (replay.kind, replay.alert.id) == (ChangeKind.UNCHANGED, opened.id)
    tomorrow = store.apply(finding(start_ms=at(19, day=2)))
    assert tomorrow.kind is ChangeKind.OPENED
    assert tomorrow.alert.id != opened.id


def test_later_data_extending_a_resolved_occurrence_revise_it_without_a_second_notice(
    store: AlertStore, clock: FakeClock
) -> None:
    """A 1-day chunk of backlog ended the condition at 21:45; the next chunk shows it went on to 23:30."""
    clock.now_ms = at(22)
    first = store.apply(finding(end_ms=at(21, 45), wasted_kwh=2.0))
    assert first.kind is ChangeKind.RESOLVED
    longer = store.apply(finding(end_ms=at(23, 30), wasted_kwh=5.0))
    assert (longer.kind, longer.alert.id, longer.notifies) == (ChangeKind.UPDATED, first.alert.id, False)
    assert (longer.alert.end_ms, longer.alert.wasted_kwh) == (at(23, 30), 5.0)
    assert store.apply(finding(end_ms=at(21, 45), wasted_kwh=2.0)).kind is ChangeKind.UNCHANGED  # stale


def test_acknowledged_alerts_keep_updating_and_still_resolve(store: AlertStore, clock: FakeClock) -> None:
    alert = store.apply(finding()).alert
    clock.now_ms = at(19, 40)
    acked = store.acknowledge(alert.id)
    assert (acked.status, acked.acknowledged_at) == (AlertStatus.ACKNOWLEDGED, at(19, 40))
    with pytest.raises(AlertConflict, match=f"alert {alert.id} is already acknowledged"):
        store.acknowledge(alert.id)
    assert store.apply(finding(wasted_kwh=4.0)).alert.status is AlertStatus.ACKNOWLEDGED
    store.apply(finding(end_ms=at(21)))
    with pytest.raises(AlertConflict, match="is resolved; there is nothing to acknowledge"):
        store.acknowledge(alert.id)
    with pytest.raises(AlertConflict, match="is resolved; there is nothing to silence"):
        store.silence(alert.id, until_ms=at(23), reason="x")
    with pytest.raises(UnknownAlert, match="no alert with id 99"):
        store.acknowledge(99)


def outbox(store: AlertStore, channel: str = "webhook") -> list[tuple[str, str]]:
    return [(row.kind, AlertNotice.model_validate_json(row.body).alert.status) for row in store.due(channel)]


def test_openings_and_resolutions_are_queued_for_every_channel(store: AlertStore) -> None:
    store.apply(finding())
    store.apply(finding(wasted_kwh=5.0))
    assert outbox(store) == outbox(store, "email") == [("alert.opened", "open")]
    store.delivered(store.due("webhook")[0].id)
    store.apply(finding(end_ms=at(21)))
    assert outbox(store) == [("alert.resolved", "resolved")]
    assert outbox(store, "email") == [("alert.resolved", "resolved")]  # the unsent opening says nothing more


def test_a_silenced_alert_is_notified_when_its_silence_ends(store: AlertStore, clock: FakeClock) -> None:
    alert = store.apply(finding()).alert
    with pytest.raises(InvalidSilence, match="is not in the future"):
        store.silence(alert.id, until_ms=clock.now_ms, reason="maintenance")
    silenced = store.silence(alert.id, until_ms=at(23), reason="maintenance tonight")
    assert (silenced.silenced_until, silenced.silence_reason) == (at(23), "maintenance tonight")
    assert silenced.silenced(clock.now_ms)
    assert store.due("webhook") == []
    clock.now_ms = at(22)
    store.apply(finding(end_ms=at(21, 30)))
    assert store.due("webhook") == []
    assert store.next_due("webhook") == at(23)
    clock.now_ms = at(23)
    assert outbox(store) == [("alert.resolved", "resolved")]


def test_an_alert_raised_long_after_it_was_detectable_says_so(store: AlertStore, clock: FakeClock) -> None:
    clock.now_ms = at(7, day=2)  # the backlog of the night arrives next day
    change = store.apply(finding(detected_at=at(19, 30)))
    assert change.alert.raised_late
    vi, en = messages(change.alert)
    assert "Cảnh báo muộn: có thể phát hiện lúc 2024-05-02 02:30 (UTC+7)" in vi
    assert "chỉ được báo lúc 2024-05-02 14:00 (UTC+7)" in vi
    assert "Raised late: detectable at 2024-05-02 02:30 (UTC+7) but reported only at 2024-05-02 14:00" in en
    assert not store.apply(finding(meter="m2", detected_at=at(6, 50, day=2))).alert.raised_late


def test_a_finding_that_already_ended_is_recorded_resolved(store: AlertStore) -> None:
    change = store.apply(finding(end_ms=at(19, 50)))
    assert (change.kind, change.alert.status, change.alert.end_ms) == (
        ChangeKind.RESOLVED,
        AlertStatus.RESOLVED,
        at(19, 50),
    )
    assert store.apply(finding(end_ms=at(19, 50))).kind is ChangeKind.UNCHANGED


def test_alerts_filter_and_page_newest_first(store: AlertStore) -> None:
    first = store.apply(finding(start_ms=at(1), end_ms=at(2))).alert
    second = store.apply(finding(meter="m2", start_ms=at(10))).alert
    third = store.apply(
        finding(meter="m3", detector=Detector.PEAK, rule="peak_overuse", start_ms=at(18))
    ).alert
    ids = [a.id for a in store.alerts(AlertQuery())]
    assert ids == [third.id, second.id, first.id]
    assert [a.id for a in store.alerts(AlertQuery(status=AlertStatus.RESOLVED))] == [first.id]
    assert [a.id for a in store.alerts(AlertQuery(detector=Detector.PEAK))] == [third.id]
    assert [a.id for a in store.alerts(AlertQuery(meter="m2"))] == [second.id]
    assert [a.id for a in store.alerts(AlertQuery(start_ms=at(3), end_ms=at(12)))] == [second.id]
    assert [a.id for a in store.alerts(AlertQuery(limit=1, before_id=third.id))] == [second.id]
