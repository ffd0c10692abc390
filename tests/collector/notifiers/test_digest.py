"""The daily digest: content per site and Vietnamese day, when it is sent, and the config it needs."""

from __future__ import annotations

import asyncio
from datetime import date, time
from pathlib import Path

from pydantic import SecretStr

from collector.config import NotifySettings, WebhookSettings
from collector.detectors.findings import Finding
from collector.notifiers.digest import digest, last_digest_ms, local_day_before, next_digest_ms, queue_digests
from collector.notifiers.dispatch import Notifications
from collector.notifiers.webhook import WebhookChannel
from collector.store import Alert
from kilowatch import yamlconfig
from tests.alert_support import FakeClock, finding, open_store
from tests.collector.test_config import load_text
from tests.collector_support import at
from tests.services import eventually


def test_a_site_digest_lists_open_alerts_and_what_the_day_wasted(tmp_path: Path) -> None:
    clock = FakeClock(0)
    with open_store(tmp_path / "kilowatch.db", clock) as store:

        def apply(found: Finding) -> Alert:
            clock.now_ms = found.detected_at  # raised live
            return store.apply(found).alert

        morning = apply(finding(start_ms=at(1), end_ms=at(2), wasted_kwh=3.0, cost_vnd=7500))  # 08:00 local
        evening = apply(finding(meter="m2", start_ms=at(10), wasted_kwh=2.0, cost_vnd=5000))  # 17:00 local
        night = apply(
            finding(meter="m3", start_ms=at(18), wasted_kwh=1.0, cost_vnd=2500)
        )  # 01:00 the day after
        store.acknowledge(night.id)
        apply(finding(site="site2", start_ms=at(10), wasted_kwh=7.0, cost_vnd=17500))
        assert store.sites_for_digest(date(2024, 5, 1)) == ["site1", "site2"]
        result = digest(store, "site1", date(2024, 5, 1))
    assert [a.id for a in result.day_alerts] == [evening.id, morning.id]
    assert [a.id for a in result.open_alerts] == [evening.id, night.id]
    assert (result.wasted_kwh, result.cost_vnd) == (5.0, 12500.0)
    assert result.message_vi.splitlines() == [
        "Kilowatch - tóm tắt ngày 01/05/2024, site1: 2 cảnh báo mới, lãng phí 5.0 kWh, khoảng 12.500 đồng. "
        "Đang mở: 2 cảnh báo.",
        "- m2: 6 kW vẫn chạy ngoài giờ làm việc. Lãng phí 2.0 kWh, khoảng 5.000 đồng.",
        "- m3: 6 kW vẫn chạy ngoài giờ làm việc. Lãng phí 1.0 kWh, khoảng 2.500 đồng.",
    ]
    assert result.message_en.splitlines() == [
        "Kilowatch - digest for 2024-05-01, site1: 2 new alerts, 5.0 kWh wasted, about 12,500 VND. "
        "Open: 2 alerts.",
        "- m2: 6 kW left on after hours. Wasted 2.0 kWh, about 5,000 VND.",
        "- m3: 6 kW left on after hours. Wasted 1.0 kWh, about 2,500 VND.",
    ]


def test_the_digest_goes_out_at_the_local_time_and_covers_the_day_before() -> None:
    seven = time(7, 0)
    assert next_digest_ms(at(23, 59), seven) == at(0, day=2)  # 06:59 in Vietnam: in a minute
    assert next_digest_ms(at(0, day=2), seven) == at(0, day=3)  # 07:00 sharp: tomorrow's
    assert next_digest_ms(at(17, 30), time(18, 30)) == at(11, 30, day=2)
    assert local_day_before(at(0, day=2)) == date(2024, 5, 1)


def test_an_unquoted_digest_time_and_a_password_without_user_are_refused(tmp_path: Path) -> None:
    problems = []
    for text in (
        "notify:\n  digest_at: 18:30\n",
        "notify:\n  email:\n    host: h\n    sender: a@b\n    to: [c@d]\n    password: hunter2\n",
        "notify:\n  webhook:\n    url: http://u:pw@hook\n    secret: 0123456789abcdef\n",
    ):
        try:
            load_text(tmp_path, text)
        except yamlconfig.ConfigError as exc:
            problems.extend(exc.problems)
    assert problems[0].startswith(
        "collector.yaml:2 notify.digest_at: 1110: Value error, write the time in quotes"
    )
    assert problems[1].startswith(
        "collector.yaml:6 notify.email.password: (value hidden): Value error, password is set but username is not"
    )
    assert "use secret" in problems[2]
    assert not any("hunter2" in p for p in problems)


def test_a_day_is_digested_once_and_a_restart_after_the_digest_time_still_sends_it(tmp_path: Path) -> None:
    clock = FakeClock(at(19, 31))
    path = tmp_path / "kilowatch.db"
    store = open_store(path, clock, channels=("webhook",))
    store.apply(finding(wasted_kwh=3.0))
    assert queue_digests(store, date(2024, 5, 1)) == 1
    assert queue_digests(store, date(2024, 5, 1)) is None  # that day's went out already
    store.close()

    # Down over the next digest time (07:00 on the 3rd in Vietnam), started again at 09:00: the digest of
    # the 2nd is owed, and the first thing the collector does is queue it, once.
    clock.now_ms = at(2, day=3)
    assert last_digest_ms(clock.now_ms, time(7, 0)) == at(0, day=3)

    async def start_and_stop() -> list[str]:
        store = open_store(path, clock, channels=("webhook",))
        channel = WebhookChannel(
            WebhookSettings(url="http://127.0.0.1:9/unreachable", secret=SecretStr("digest-test-s3cret-key"))
        )
        settings = NotifySettings(digest_at=time(7, 0), retry_min_s=60, retry_max_s=60)
        task = asyncio.create_task(
            Notifications(store=store, channels=[channel], settings=settings, clock=clock).run()
        )
        await eventually(lambda: any(row.kind == "digest" for row in store.due("webhook")), "the owed digest")
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        kinds = [row.kind for row in store.due("webhook")]
        store.close()
        return kinds

    assert asyncio.run(start_and_stop()).count("digest") == 2  # the 1st's, still undelivered, and the 2nd's
    assert asyncio.run(start_and_stop()).count("digest") == 2  # a second restart owes nothing more
