"""What a notification channel is, and the notices it carries."""

from __future__ import annotations

from typing import Annotated, Protocol

from pydantic import Field, TypeAdapter

from collector.alerts import AlertNotice
from collector.notifiers.digest import DigestNotice
from collector.notifiers.monthly import MonthlyReportNotice
from collector.store import NotificationRow

Notice = Annotated[AlertNotice | DigestNotice | MonthlyReportNotice, Field(discriminator="kind")]
NOTICE: TypeAdapter[Notice] = TypeAdapter(Notice)
"""Parses an outbox row's body."""


class NotifyError(Exception):
    """A channel could not deliver; the message names the channel and the cause, never a secret."""


class Channel(Protocol):
    """Delivers outbox rows; raises :class:`NotifyError` when it could not (the row is retried)."""

    @property
    def name(self) -> str: ...

    async def send(self, row: NotificationRow) -> None: ...
