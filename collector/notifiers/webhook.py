"""Notices POSTed as JSON to a URL, signed so the receiver can tell they come from this collector.

The signature, ``X-Kilowatch-Signature: sha256=<hex>``, is HMAC-SHA256 of the exact body with the
configured secret. A retried notice keeps its body and its ``X-Kilowatch-Delivery`` id, so a receiver
can drop a duplicate (a retry after a response that was lost).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

import aiohttp

from collector.config import WebhookSettings
from collector.notifiers.channel import NotifyError
from collector.store import NotificationRow

SIGNATURE_HEADER = "X-Kilowatch-Signature"
EVENT_HEADER = "X-Kilowatch-Event"
DELIVERY_HEADER = "X-Kilowatch-Delivery"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """POSTs each notice; any answer but 2xx, a timeout or a connection error is a failure."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings) -> None:
        self._url = settings.url
        self._secret = settings.secret.get_secret_value().encode()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        parts = urlsplit(settings.url)
        # Chat bridges put tokens in the path (Telegram, Slack): logs and errors show scheme and host only.
        self.target = f"{parts.scheme}://{parts.netloc}"

    async def send(self, row: NotificationRow) -> None:
        body = row.body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            EVENT_HEADER: row.kind,
            DELIVERY_HEADER: str(row.id),
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(self._url, data=body, headers=headers) as response,
            ):
                if not 200 <= response.status < 300:
                    raise NotifyError(f"webhook {self.target} answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            cause = str(exc).replace(self._url, self.target) or type(exc).__name__
            raise NotifyError(f"webhook {self.target}: {cause}") from exc
