"""Helpers for the alert and notification tests: findings at fixed times and a clock the test moves."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collector.alerts import AlertStore
from collector.detectors.findings import Detector, Finding
from collector.store import Ledger, Location
from tests.collector_support import at


@dataclass
class FakeClock:
    """Wall-clock time the test sets; pass the instance as a store's `clock`."""

    now_ms: int

    def __call__(self) -> int:
        return self.now_ms


RATE_VND_PER_KWH = 2000
"""What the findings of these tests cost a kWh unless a test gives the cost (detectors price by the sites file)."""


def finding(
    *,
    start_ms: int = at(19),
    end_ms: int | None = None,
    detected_at: int | None = None,
    wasted_kwh: float = 3.0,
    cost_vnd: float | None = None,
    meter: str = "m1",
    site: str = "site1",
    detector: Detector = Detector.AFTER_HOURS,
    rule: str = "R4",
) -> Finding:
    return Finding(
        site=site,
        meter=meter,
        detector=detector,
        rule=rule,
        start_ms=start_ms,
        end_ms=end_ms,
        detected_at=start_ms + 30 * 60_000 if detected_at is None else detected_at,
        wasted_kwh=wasted_kwh,
        cost_vnd=wasted_kwh * RATE_VND_PER_KWH if cost_vnd is None else cost_vnd,
        magnitude=6.0,
        message_en="6 kW left on after hours.",
        message_vi="6 kW vẫn chạy ngoài giờ làm việc.",
    )


def open_store(path: Location, clock: FakeClock, *, channels: tuple[str, ...] = ()) -> AlertStore:
    """An alert store in a ledger, as the collector has it (the ledger creates it first)."""
    Ledger(path).close()
    return AlertStore(path, channels=channels, clock=clock)


Received = list[tuple[dict[str, str], bytes]]
"""What a webhook receiver got: each request's headers and body."""


class _Hook(BaseHTTPRequestHandler):
    received: Received

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, Received]]:
    """A real local HTTP server taking webhook POSTs: its URL and what it received."""
    received: Received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Hook", (_Hook,), {"received": received}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/kilowatch", received
    finally:
        server.shutdown()
        server.server_close()


def call(url: str, method: str = "GET", *, key: str | None = None) -> Any:
    """A JSON API call on loopback, with the API key `key` if given."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback
        return json.loads(response.read())
