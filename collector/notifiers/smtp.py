"""Notices by e-mail, Vietnamese first then English.

Sent with the standard library's :mod:`smtplib` in a worker thread: the collector sends a handful of
mails a day, which does not justify another dependency (``aiosmtplib``) in the collector's install.
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from collector.alerts import AlertNotice, local_text
from collector.config import EmailSettings
from collector.notifiers.channel import NOTICE, Notice, NotifyError
from collector.notifiers.monthly import MonthlyReportNotice
from collector.saving.export import XLSX
from collector.store import NotificationRow
from kilowatch.timebase import to_ms

SUBJECT_PREFIX = "[kilowatch]"


def render(notice: Notice) -> tuple[str, str]:
    """(subject, text) of the mail telling `notice`."""
    if isinstance(notice, AlertNotice):
        a = notice.alert
        opened = notice.kind == "alert.opened"
        state = "Cảnh báo mới / New alert" if opened else "Đã hết / Resolved"
        late = " (muộn / late)" if a.raised_late else ""
        subject = f"{SUBJECT_PREFIX} {state}{late}: {a.site} {a.meter} {a.detector.value}"
        when = f"{local_text(to_ms(a.start))} -> {local_text(to_ms(a.end)) if a.end else '...'}"
        return subject, f"{a.message_vi}\n\n{a.message_en}\n\n{when}\nalert #{a.id}\n"
    if isinstance(notice, MonthlyReportNotice):
        subject = f"{SUBJECT_PREFIX} Báo cáo điện tháng / Monthly report {notice.month}: {notice.name}"
        return subject, f"{notice.message_vi}\n\n{notice.message_en}\n"
    d = notice.digest
    return (
        f"{SUBJECT_PREFIX} Tóm tắt / Digest {d.day:%Y-%m-%d}: {d.site}",
        f"{d.message_vi}\n\n{d.message_en}\n",
    )


class EmailChannel:
    """Mails each notice to the configured recipients; a unit's monthly report goes to its managers, with
    the workbook attached."""

    name = "email"

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings

    async def send(self, row: NotificationRow) -> None:
        notice = NOTICE.validate_json(row.body)
        subject, text = render(notice)
        monthly = notice if isinstance(notice, MonthlyReportNotice) else None
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = self._settings.sender
        message["To"] = ", ".join(monthly.to if monthly else self._settings.to)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(idstring=f"kilowatch.{row.id}")
        message.set_content(text)
        if monthly is not None:
            maintype, subtype = XLSX.split("/")
            message.add_attachment(
                base64.b64decode(monthly.workbook),
                maintype=maintype,
                subtype=subtype,
                filename=monthly.filename,
            )
        await asyncio.to_thread(self._deliver, message)

    def _deliver(self, message: EmailMessage) -> None:
        s = self._settings
        context = ssl.create_default_context()  # smtplib's own default does not verify the server
        try:
            smtp = (
                smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=context)
                if s.security == "tls"
                else smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
            )
            with smtp:
                if s.security == "starttls":
                    smtp.starttls(context=context)
                if s.username is not None:
                    smtp.login(s.username, s.password.get_secret_value() if s.password else "")
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"e-mail via {s.host}:{s.port}: {exc}") from exc
