"""End to end in the running collector: a finding applied to the ledger's alert store reaches a real
webhook through the service's notifier, and the API lists and acknowledges the alert."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import sys
from pathlib import Path

from app.processes import Process, free_port, wait_until
from collector.alerts import AlertStore
from tests.alert_support import call, finding
from tests.api_support import api_key
from tests.ledger_support import LedgerAt, ledger_settings

SECRET = "live-webhook-s3cret-42"  # noqa: S105 - the test receiver's


def test_the_running_collector_posts_an_alert_to_the_webhook_and_serves_it(
    tmp_path: Path, ledger_at: LedgerAt, hook: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    hook_url, received = hook
    api_port = free_port()
    ledger = ledger_at("kilowatch")
    config = tmp_path / "collector.yaml"
    settings = {
        "mqtt": {"port": free_port()},
        "ledger": ledger_settings(ledger),
        "api": {"port": api_port},
        "notify": {"webhook": {"url": hook_url, "secret": SECRET}, "poll_s": 0.2, "retry_min_s": 0.1},
    }
    config.write_text(json.dumps(settings))  # JSON is YAML
    collector = Process(
        "collector",
        [sys.executable, "-c", "from collector.cli import app; app()", "run", "--config", str(config)],
        tmp_path / "collector.log",
    ).start()
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_until(lambda: call(f"{base}/healthz")["ledger_ok"], 20, "the collector's API")
        key = api_key(ledger)
        with AlertStore(ledger, channels=("webhook",)) as store:  # as a detector process would
            alert_id = store.apply(finding(wasted_kwh=3.0)).alert.id
        [(headers, body)] = wait_until(lambda: list(received), 20, "the webhook to receive the alert")
        [listed] = call(f"{base}/api/v1/alerts?site=site1&status=open", key=key)
        assert call(f"{base}/api/v1/alerts/{alert_id}/ack", "POST", key=key)["status"] == "acknowledged"
        assert collector.proc is not None
        collector.proc.send_signal(signal.SIGTERM)
        assert collector.proc.wait(timeout=20) == 0, collector.log()
    finally:
        collector.stop()
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Kilowatch-Signature"], expected)
    notice = json.loads(body)
    assert (notice["kind"], notice["alert"]["id"], notice["alert"]["cost_vnd"]) == (
        "alert.opened",
        alert_id,
        6000.0,
    )
    assert listed["id"] == alert_id
    assert listed["message_en"] == notice["alert"]["message_en"]
    assert SECRET not in collector.log()
