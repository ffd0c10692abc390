"""Notifications of alerts: a webhook and e-mail, each opened or resolved alert and a daily digest per site.

What to send waits in the ledger's ``alert_outbox`` (written by :class:`~collector.alerts.AlertStore` in the
transaction that changes the alert), so nothing is lost on restart and nothing waits on ingestion:
:class:`~collector.notifiers.dispatch.Notifications` drains it, one task per channel, retrying with backoff.
"""
