"""The agent's optional Prometheus endpoint: each meter's health and the spool's state as ``GET /metrics``.

Hand-written on purpose: the agent runs on small gateways and its extra installs only pymodbus,
pyserial, aiomqtt and pydantic. ``prometheus_client`` would add a dependency (and a thread-based HTTP
server) for what is a few counters rendered as text; the exposition format (version 0.0.4) is small and
stable, and the tests check this output with ``prometheus_client``'s own parser. The numbers come from
the same :class:`~kilowatch.mqtt_contract.MeterHealth` and :class:`~kilowatch.mqtt_contract.SpoolStatus`
snapshots as the status topic's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Self

from kilowatch.mqtt_contract import MeterHealth, SpoolStatus

log = logging.getLogger(__name__)

PREFIX = "kilowatch_agent_meter_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT_S = 5.0
"""How long a client may take to send its request before it is dropped."""

SPOOL_PREFIX = "kilowatch_agent_spool_"

HealthSource = Callable[[], Mapping[str, MeterHealth]]
"""Each meter's health now, by meter id."""
SpoolSource = Callable[[], SpoolStatus]
"""The spool's state now."""

Samples = Iterable[tuple[dict[str, str], float]]
"""One metric's samples for one meter: extra labels (besides meter and bus) and the value."""

FAILURE_KINDS: dict[str, Callable[[MeterHealth], int]] = {
    "timeout": lambda h: h.timeouts,
    "crc": lambda h: h.crc_errors,
    "wrong_unit": lambda h: h.wrong_unit,
    "malformed": lambda h: h.malformed,
    "modbus_exception": lambda h: sum(h.exceptions.values()),
}
"""The `kind` label of ``failures_total``: failed attempts by cause."""

METRICS: tuple[tuple[str, str, str, Callable[[MeterHealth], Samples]], ...] = (
    ("polls_total", "counter", "Polls made", lambda h: [({}, h.polls)]),
    (
        "successes_total",
        "counter",
        "Polls in which every request was answered",
        lambda h: [({}, h.successes)],
    ),
    (
        "skipped_total",
        "counter",
        "Cycles the meter was not polled because its circuit breaker was open",
        lambda h: [({}, h.skipped)],
    ),
    (
        "failures_total",
        "counter",
        "Failed attempts (retries included) by kind",
        lambda h: [({"kind": kind}, count(h)) for kind, count in FAILURE_KINDS.items()],
    ),
    (
        "modbus_exceptions_total",
        "counter",
        "Modbus exception responses by exception code",
        lambda h: [({"code": str(code)}, n) for code, n in h.exceptions.items()],
    ),
    (
        "counter_resets_total",
        "counter",
        "Times an energy counter read lower than before (a reset or a replaced meter)",
        lambda h: [({}, h.counter_resets)],
    ),
    (
        "implausible_values_total",
        "counter",
        "Values decoded outside their quantity's physical range, sent as bad",
        lambda h: [({}, h.implausible_values)],
    ),
    (
        "implausible",
        "gauge",
        "1 while the meter answers impossible values (wrong word order or unit id, broken firmware)",
        lambda h: [({}, 1 if h.implausible else 0)],
    ),
    (
        "last_good_timestamp_seconds",
        "gauge",
        "When the last successful poll started, seconds since the epoch (absent before one)",
        lambda h: [] if h.last_good_ts is None else [({}, h.last_good_ts / 1000)],
    ),
    (
        "poll_latency_seconds",
        "gauge",
        "How long the last poll held the bus, seconds (absent before one)",
        lambda h: [] if h.last_latency_s is None else [({}, h.last_latency_s)],
    ),
    (
        "breaker_open",
        "gauge",
        "1 while the meter's circuit breaker is open (it stopped answering and is only probed)",
        lambda h: [({}, 1 if h.breaker == "open" else 0)],
    ),
)
"""Every metric: name after the prefix, type, help text, and its samples from one meter's health."""

SPOOL_METRICS: tuple[tuple[str, str, str, Callable[[SpoolStatus], float | None]], ...] = (
    (
        "pending_batches",
        "gauge",
        "Batches stored, not yet acknowledged by the broker",
        lambda s: s.pending_batches,
    ),
    ("pending_readings", "gauge", "Readings in those batches", lambda s: s.pending_readings),
    (
        "oldest_timestamp_seconds",
        "gauge",
        "Event time of the oldest pending reading, seconds since the epoch (absent when none)",
        lambda s: None if s.oldest_ts is None else s.oldest_ts / 1000,
    ),
    (
        "evicted_readings_total",
        "counter",
        "Readings evicted unsent (spool over its size or age bound) since the spool was created",
        lambda s: s.evicted_readings,
    ),
    (
        "accepting",
        "gauge",
        "0 while the spool cannot store new readings (disk full): they are lost",
        lambda s: int(s.accepting),
    ),
)
"""The agent-level spool metrics: name after the spool prefix, type, help text, and the value."""


def escape_label_value(value: str) -> str:
    """A label value as the text format quotes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(health: Mapping[str, MeterHealth], spool: SpoolStatus | None = None) -> str:
    """The exposition text for every meter's health and the spool's state."""
    lines = []
    for suffix, kind, text, samples in METRICS:
        name = PREFIX + suffix
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for meter, meter_health in health.items():
            for extra, value in samples(meter_health):
                labels = {"meter": meter, "bus": meter_health.bus, **extra}
                quoted = ",".join(f'{key}="{escape_label_value(v)}"' for key, v in labels.items())
                lines.append(f"{name}{{{quoted}}} {value!r}")
    if spool is not None:
        lines += _spool_lines(spool)
    return "\n".join(lines) + "\n"


def _spool_lines(spool: SpoolStatus) -> list[str]:
    lines = []
    for suffix, kind, text, sample in SPOOL_METRICS:
        name = SPOOL_PREFIX + suffix
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        if (value := sample(spool)) is not None:
            lines.append(f"{name} {value!r}")
    return lines


def respond(
    request_line: bytes, health: HealthSource, spool: SpoolSource | None = None
) -> tuple[str, str, bytes]:
    """Status, content type and body for an HTTP request line: the metrics for ``GET /metrics``."""
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "400 Bad Request", "text/plain", b"bad request\n"
    method, target, _ = parts
    if target.partition("?")[0] != "/metrics":
        return "404 Not Found", "text/plain", b"not found; try /metrics\n"
    if method != "GET":
        return "405 Method Not Allowed", "text/plain", b"only GET\n"
    return "200 OK", CONTENT_TYPE, render(health(), None if spool is None else spool()).encode()


class MetricsServer:
    """A tiny HTTP/1.0 server for ``GET /metrics``, as an async context manager.

    Args:
        health: Called on every scrape for each meter's health.
        spool: Called on every scrape for the spool's state; None: no spool metrics.
        host: Address to listen on.
        port: TCP port; 0 picks a free one (read :attr:`port` once started).
    """

    def __init__(
        self, health: HealthSource, *, host: str, port: int, spool: SpoolSource | None = None
    ) -> None:
        self.health = health
        self.spool = spool
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        """Start listening; OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request_line = await reader.readline()
                while (await reader.readline()).strip():  # headers: none matter here
                    pass
            status, content_type, body = respond(request_line, self.health, self.spool)
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as exc:  # ValueError: a line over the limit
            log.debug("metrics request dropped: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
