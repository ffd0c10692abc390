"""E-mail notifications against a real local SMTP server (aiosmtpd), with a login."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from app.processes import free_port
from collector.config import EmailSettings, NotifySettings
from collector.notifiers.channel import NotifyError
from collector.notifiers.digest import queue_digests
from collector.notifiers.dispatch import Notifications
from collector.notifiers.smtp import EmailChannel
from tests.alert_support import FakeClock, finding, open_store
from tests.collector_support import at
from tests.services import eventually

PASSWORD = "smtp-pa55word"  # noqa: S105 - the local test server's


@dataclass
class Mailbox:
    """What the local SMTP server received, and who logged in."""

    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == PASSWORD.encode())


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=mailbox.authenticate, auth_require_tls=False
    )
    controller.start()
    yield mailbox, port
    controller.stop()


def email_settings(port: int, password: str = PASSWORD) -> EmailSettings:
    return EmailSettings(
        host="127.0.0.1",
        port=port,
        security="none",
        username="kilowatch",
        password=SecretStr(password),
        sender="kilowatch@example.vn",
        to=["facility@example.vn", "owner@example.vn"],
    )


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def test_an_opened_alert_and_a_digest_arrive_in_both_languages(
    tmp_path: Path, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp_server
    clock = FakeClock(at(19, 31))
    store = open_store(tmp_path / "kilowatch.db", clock, channels=("email",))
    notifications = Notifications(
        store=store,
        channels=[EmailChannel(email_settings(port))],
        settings=NotifySettings(retry_min_s=0.02, retry_max_s=0.1, poll_s=0.5, digest_at=None),
        clock=clock,
    )
    task = asyncio.create_task(notifications.run())
    try:
        await notifications.submit(finding(wasted_kwh=3.0))
        await eventually(lambda: len(mailbox.messages) == 1, "the alert mail")
        assert await asyncio.to_thread(queue_digests, store, date(2024, 5, 2)) == 1
        notifications.wake()
        await eventually(lambda: len(mailbox.messages) == 2, "the digest mail")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
    alert, digest = mailbox.messages
    assert alert["Subject"] == "[kilowatch] Cảnh báo mới / New alert: site1 m1 after_hours"
    assert alert["From"] == "kilowatch@example.vn"
    assert alert["To"] == "facility@example.vn, owner@example.vn"
    text = text_of(alert)
    assert "6 kW vẫn chạy ngoài giờ làm việc. Lãng phí 3.0 kWh, khoảng 6.000 đồng." in text
    assert "6 kW left on after hours. Wasted 3.0 kWh, about 6,000 VND." in text
    assert "2024-05-02 02:00 (UTC+7) -> ..." in text
    assert digest["Subject"] == "[kilowatch] Tóm tắt / Digest 2024-05-02: site1"
    assert "Kilowatch - tóm tắt ngày 02/05/2024, site1" in text_of(digest)
    assert "Kilowatch - digest for 2024-05-02, site1" in text_of(digest)
    assert mailbox.logins == [(b"kilowatch", PASSWORD.encode())] * 2


async def test_an_unreachable_server_is_a_notify_error_without_the_password(tmp_path: Path) -> None:
    port = free_port()
    with open_store(tmp_path / "kilowatch.db", FakeClock(at(19, 31)), channels=("email",)) as store:
        store.apply(finding())
        [row] = store.due("email")
    with pytest.raises(NotifyError) as caught:
        await EmailChannel(email_settings(port)).send(row)
    assert str(caught.value).startswith(f"e-mail via 127.0.0.1:{port}: ")
    assert PASSWORD not in str(caught.value)
