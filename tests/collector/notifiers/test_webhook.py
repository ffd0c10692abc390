"""Webhook notifications against a real local HTTP server: the HMAC signature and the retry after a 500."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from app.processes import free_port
from collector.config import NotifySettings, WebhookSettings
from collector.notifiers.channel import NotifyError
from collector.notifiers.dispatch import Notifications
from collector.notifiers.webhook import WebhookChannel
from collector.store import NotificationRow
from tests.alert_support import FakeClock, finding, open_store
from tests.collector_support import at
from tests.services import eventually

SECRET = "webhook-s3cret-0123456789"  # noqa: S105 - the test receiver's


@dataclass
class Receiver:
    """A local HTTP server that answers each POST with the next status of `statuses` (then 200)."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hooks/kilowatch")
    app = web.Application()
    app.router.add_post("/hooks/kilowatch", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield receiver
    await runner.cleanup()


def settings() -> NotifySettings:
    return NotifySettings(retry_min_s=0.02, retry_max_s=0.1, poll_s=0.5, digest_at=None)


async def test_an_opened_alert_is_posted_signed_and_retried_after_a_500(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    clock = FakeClock(at(19, 31))
    store = open_store(tmp_path / "kilowatch.db", clock, channels=("webhook",))
    channel = WebhookChannel(WebhookSettings(url=receiver.url, secret=SecretStr(SECRET)))
    notifications = Notifications(store=store, channels=[channel], settings=settings(), clock=clock)
    task = asyncio.create_task(notifications.run())
    try:
        change = await notifications.submit(finding(wasted_kwh=3.0))
        await eventually(lambda: len(receiver.received) == 2, "the retry after the 500")
        await eventually(lambda: store.due("webhook") == [], "the delivered notice to leave the outbox")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
    (first_headers, first_body), (headers, body) = receiver.received
    assert first_body == body
    assert first_headers["X-Kilowatch-Delivery"] == headers["X-Kilowatch-Delivery"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Kilowatch-Signature"], expected)
    assert headers["X-Kilowatch-Event"] == "alert.opened"
    assert headers["Content-Type"] == "application/json"
    notice = json.loads(body)
    assert notice["kind"] == "alert.opened"
    assert notice["alert"]["id"] == change.alert.id
    assert notice["alert"]["cost_vnd"] == 6000.0
    assert "Lãng phí 3.0 kWh" in notice["alert"]["message_vi"]
    assert "Wasted 3.0 kWh" in notice["alert"]["message_en"]
    assert SECRET not in body.decode()


async def test_a_repeat_is_not_posted_but_the_resolution_is(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock(at(19, 31))
    store = open_store(tmp_path / "kilowatch.db", clock, channels=("webhook",))
    channel = WebhookChannel(WebhookSettings(url=receiver.url, secret=SecretStr(SECRET)))
    notifications = Notifications(store=store, channels=[channel], settings=settings(), clock=clock)
    task = asyncio.create_task(notifications.run())
    try:
        await notifications.submit(finding(wasted_kwh=3.0))
        await eventually(lambda: len(receiver.received) == 1, "the opening")
        await notifications.submit(finding(wasted_kwh=4.0))
        await notifications.submit(finding(end_ms=at(21), wasted_kwh=5.0))
        await eventually(lambda: len(receiver.received) == 2, "the resolution")
        await eventually(lambda: store.due("webhook") == [], "the outbox to empty")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
    kinds = [headers["X-Kilowatch-Event"] for headers, _ in receiver.received]
    assert kinds == ["alert.opened", "alert.resolved"]
    assert json.loads(receiver.received[-1][1])["alert"]["wasted_kwh"] == 5.0


async def test_failures_name_scheme_and_host_but_never_the_path_or_secret() -> None:
    url = f"http://127.0.0.1:{free_port()}/bot123456:TOKEN/send"
    channel = WebhookChannel(WebhookSettings(url=url, secret=SecretStr(SECRET)))
    with pytest.raises(NotifyError) as caught:
        await channel.send(
            NotificationRow(id=1, channel="webhook", kind="alert.opened", body="{}", attempts=0)
        )
    message = str(caught.value)
    assert message.startswith("webhook http://127.0.0.1:")
    assert "TOKEN" not in message
    assert SECRET not in message
