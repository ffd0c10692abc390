"""The running collector: MQTT ingestion, the TSDB writer, the HTTP API, notifications, the ledger's retention
(:mod:`collector.pruning`) and (if enabled) the live detectors (:mod:`collector.detect_live`) as named tasks in
one event loop.

SIGTERM or SIGINT stops it gracefully: ingestion stops taking messages (what it has not committed is
not acknowledged, so the broker keeps it for the next start), the TSDB writer gets a few seconds to
empty the outbox (what remains waits in the ledger), the API finishes its requests, the ledger is
closed; then it returns normally (exit 0). The broker may be down at start: the API comes up anyway and ingestion keeps retrying.
A full disk at start does not stop it either: it waits for room to open its ledger (:func:`_open_ledger`).

No background task takes the service down: each handles the errors it expects (the broker going away, the
TSDB down, a full disk: ingestion pauses and /healthz says so) and, should one still fail, it is logged,
counted (``kilowatch_collector_task_restarts_total``) and started again with backoff (:func:`_supervised`).
Only the API server ending, or a signal, stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import uvicorn

from collector.alerts import AlertStore
from collector.api.app import create_app
from collector.api.health import waiting_app
from collector.config import CollectorConfig
from collector.detect_live import LiveDetection
from collector.detectors.config import Sites, load_sites
from collector.ingest import Ingestor
from collector.metrics import CollectorMetrics
from collector.notifiers.dispatch import Notifications, channels
from collector.notifiers.monthly import ledger_monthly_reporter
from collector.pruning import Pruner
from collector.replicas import LEASE_RETRY_S, SiteLeases, while_held
from collector.reports import ledger_reporter
from collector.store import (
    RATED_HEADROOM,
    AlertLedger,
    DatabaseError,
    IngestChecks,
    Ledger,
    Location,
    Postgres,
    RejectedLimits,
    RetentionPolicy,
)
from collector.store.leases import Leases
from collector.tsdb import TsdbWriter
from kilowatch import __version__
from kilowatch.backoff import Backoff
from kilowatch.sdnotify import supervise
from kilowatch.timebase import DAY_MS
from kilowatch.yamlconfig import ConfigError

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0
"""How long shutdown waits for the TSDB writer to empty the outbox."""

RESTART_MIN_S = 1.0
RESTART_MAX_S = 60.0
"""A failed background task starts again after a wait doubling between these (with jitter)."""

LEDGER_RETRY_MAX_S = 30.0
"""The longest wait between two tries to open the ledger on a full disk at start."""

OUTBOX_POLL_S = 1.0
GAUGES_S = 30.0
"""With replicas: how often the TSDB writer looks at the outbox and the ledger's gauges are read again
(the other replicas' commits move them)."""


class ServiceError(Exception):
    """The collector cannot start or one of its tasks died; the message says which and why."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the service owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, with TCP_NODELAY for the connections it accepts (they inherit it).

    asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP, and ``create_server`` makes
    them with proto 0: without it, Nagle's algorithm held back the body that h11 writes after the headers
    until the client's delayed ACK came, about 40 ms per response on a keep-alive connection.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ServiceError(f"the API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def _detection(
    config: CollectorConfig, metrics: CollectorMetrics, leases: Leases | None
) -> LiveDetection | None:
    """The live detectors if enabled; ServiceError naming the file, key and problem if their settings are bad.
    With replicas (`leases`), only the sites this replica holds are judged."""
    settings = config.detection
    if not settings.enabled or settings.sites is None:
        return None
    try:
        sites = await asyncio.to_thread(load_sites, settings.sites)
    except ConfigError as exc:
        raise ServiceError(f"detection settings: {exc}") from exc
    detection = LiveDetection(
        config.ledger.location,
        sites,
        settings,
        metrics=metrics,
        sites_held=None if leases is None else SiteLeases(leases, sites.sites).claim,
        retry_s=LEASE_RETRY_S,
    )
    log.info(
        "detection: %d meters of %d sites from %s, a pass every %g s",
        len(detection.meters), len(sites.sites), settings.sites, settings.interval_s,
    )  # fmt: skip
    return detection


async def _ingest_checks(config: CollectorConfig) -> IngestChecks:
    """What readings are held to: collector.yaml's plausibility, and from the sites file (when one is
    given) each configured meter's site, gateway and maximum power."""
    plausibility = config.plausibility
    sites = Sites(sites={})
    if config.detection.sites is not None:
        try:
            sites = await asyncio.to_thread(load_sites, config.detection.sites)
        except ConfigError as exc:
            raise ServiceError(f"sites file: {exc}") from exc
    meters = {m: (s, meter) for s, site in sites.sites.items() for m, meter in site.meters.items()}
    return IngestChecks(
        window=plausibility.window(),
        max_kw={
            m: RATED_HEADROOM * max(meter.rated_kw, meter.demand_limit_kw or 0.0)
            for m, (_, meter) in meters.items()
        },
        default_max_kw=plausibility.default_max_kw,
        provisioned={m: (s, meter.gateway) for m, (s, meter) in meters.items()},
    )


async def serve(config: CollectorConfig) -> None:
    """Run until SIGTERM/SIGINT; raise :class:`ServiceError` when it cannot start or a task dies.

    What it opens is closed by one exit stack, in reverse order; its tasks are all cancelled (the API asked
    to finish its requests) and awaited before that.
    """
    async with contextlib.AsyncExitStack() as stack:
        limits = config.limits
        checks = await _ingest_checks(config)
        api = config.api
        sock = stack.enter_context(_listen(api.host, api.port))
        stop = asyncio.Event()
        stack.enter_context(_stop_on_signals(stop))
        policy = retention_policy(config)
        ledger = await _open_ledger(config, checks, policy, sock, stop)
        if ledger is None:
            log.info("stopped before the ledger could be opened")
            return
        stack.push_async_callback(asyncio.to_thread, ledger.close)
        location = config.ledger.location
        leases = None
        if config.mqtt.share_group is not None and isinstance(location, Postgres):
            leases = Leases(location)
            stack.push_async_callback(asyncio.to_thread, leases.close)
        metrics = CollectorMetrics()
        detection = await _detection(config, metrics, leases)
        writer = (
            TsdbWriter(
                settings=config.tsdb,
                metrics=metrics,
                ledger=ledger,
                poll_s=None if leases is None else OUTBOX_POLL_S,
            )
            if config.tsdb
            else None
        )
        ingestor = Ingestor(
            settings=config.mqtt,
            ledger=ledger,
            metrics=metrics,
            on_commit=writer.wake if writer else None,
            limits=limits,
        )
        app = create_app(
            ledger=config.ledger.location,
            metrics=metrics,
            mqtt_connected=lambda: ingestor.connected,
            settings=config.api,
            sites=detection.sites if detection else None,
            ledger_error=lambda: ingestor.ledger_error,
        )
        server = _EmbeddedServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
        log.info(
            "kilowatch collector %s: API http://%s:%d, ledger %s, %s, broker %s",
            __version__,
            api.host,
            api.port,
            _shown(config.ledger.location),
            f"TSDB {writer.url}" if writer else "no TSDB",
            config.mqtt.address,
        )

        senders = channels(config.notify)
        alert_store = stack.enter_context(
            AlertStore(config.ledger.location, settings=config.alerts, channels=[c.name for c in senders])
        )
        notifications = Notifications(
            store=alert_store,
            channels=senders,
            settings=config.notify,
            reporter=ledger_reporter(config.ledger.location, detection.sites) if detection else None,
            monthly=(
                ledger_monthly_reporter(config.ledger.location, detection.sites)
                if detection and detection.sites.units
                else None
            ),
        )

        # What start-up made (modules, the app, settings) lives as long as the process: out of the cyclic
        # collector's sight, a full collection no longer walks it (~50 ms, paid by whichever request
        # triggered it: the API's tail latency).
        gc.freeze()

        def start(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
            return asyncio.create_task(_supervised(name, run, metrics), name=name)

        def start_once(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
            """A job one replica runs at a time (any job, when there are no replicas)."""
            if leases is None:
                return start(name, run)
            held = leases
            return start(name, lambda: while_held(held, name, run))

        ingest_task = start("mqtt-ingest", ingestor.run)
        api_task = asyncio.create_task(server.serve(sockets=[sock]), name="http-api")
        writer_task = start_once("tsdb-writer", writer.run) if writer else None
        notify_task = start_once("notifications", notifications.run) if senders else None
        detect_task = start("detection", lambda: detection.run(notifications.submit)) if detection else None
        pruner = Pruner(
            ledger=ledger,
            alerts=stack.enter_context(AlertLedger(config.ledger.location)),
            policy=policy,
            interval_s=config.ledger.retention.interval_s,
            metrics=metrics,
        )
        prune_task = start_once("retention", pruner.run)
        gauges_task = start("ledger-gauges", lambda: _keep_gauges(ingestor, writer)) if leases else None
        tasks = (ingest_task, api_task, writer_task, notify_task, detect_task, prune_task, gauges_task)
        workers = {t for t in tasks if t is not None}
        workers.add(asyncio.create_task(supervise(), name="systemd-notify"))  # READY=1, watchdog pings
        stopping = asyncio.create_task(stop.wait(), name="stop-signal")
        try:
            done, _ = await asyncio.wait({*workers, stopping}, return_when=asyncio.FIRST_COMPLETED)
            log.info("stopping: %s", "signal received" if stopping in done else "a task ended")
            ingest_task.cancel()
            server.should_exit = True
            if (
                writer is not None
                and writer_task is not None
                and not writer_task.done()
                and (leases is None or leases.holds("tsdb-writer"))
            ):
                try:
                    await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
                except TimeoutError:
                    log.warning(
                        "the TSDB writer did not empty the outbox in %.0f s; the rest waits in the ledger",
                        DRAIN_TIMEOUT_S,
                    )
        finally:
            await _stop(workers | {stopping}, api_task, server)
    died = [t for t in workers if t in done]
    if died:
        task = died[0]
        cause = task.exception() if not task.cancelled() else None
        raise ServiceError(f"task {task.get_name()} stopped unexpectedly: {cause!r}") from cause
    log.info("stopped")


async def _keep_gauges(ingestor: Ingestor, writer: TsdbWriter | None) -> None:
    """With replicas: the ledger's gauges (missing batches, quarantine, the TSDB backlog) read again every
    GAUGES_S, since the other replicas' commits and TSDB writer move them too. A ledger that cannot be read
    keeps them as they are until the next time (ingestion says why it pauses)."""
    while True:
        await asyncio.sleep(GAUGES_S)
        with contextlib.suppress(*DatabaseError):
            await asyncio.to_thread(ingestor.load_gauges)
            if writer is not None:
                await asyncio.to_thread(writer.count_backlog)


def _shown(ledger: Location) -> str:
    """The ledger as logs name it: the file's absolute path, or the URL without its password."""
    return str(ledger.absolute() if isinstance(ledger, Path) else ledger)


def _no_room(exc: Exception) -> bool:
    """Whether the ledger failed for lack of room (worth waiting for), not for a file that is damaged, of a
    newer schema or forbidden, or a server that cannot be reached (those need someone: the service exits)."""
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate == "53100"  # disk_full
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def retention_policy(config: CollectorConfig) -> RetentionPolicy:
    retention = config.ledger.retention
    return RetentionPolicy(
        readings_ms=round(retention.readings_days * DAY_MS),
        compact_after_ms=round(retention.compact_after_days * DAY_MS),
        batches_ms=round(retention.batches_days * DAY_MS),
        quarantine_ms=round(retention.quarantine_days * DAY_MS),
        resolved_alerts_ms=round(retention.resolved_alerts_days * DAY_MS),
        gateway_events_ms=round(retention.gateway_events_days * DAY_MS),
    )


async def _open_ledger(
    config: CollectorConfig,
    checks: IngestChecks,
    policy: RetentionPolicy,
    sock: socket.socket,
    stop: asyncio.Event,
) -> Ledger | None:
    """The ledger (created and migrated if need be); None if `stop` is set before it could be opened.

    On a full disk it waits instead of exiting: it tries again with backoff, logs the reason when it
    changes, and answers ``/healthz`` as failing with it on the API's socket meanwhile. Nothing subscribes
    to the broker before the ledger is open, so nothing is acknowledged and the broker keeps the messages.
    Any other error (damaged file, newer schema, permission denied, a PostgreSQL server that cannot be
    reached) is a :class:`ServiceError`.
    """
    path = config.ledger.location
    limits = config.limits

    def attempt() -> Ledger:
        return Ledger(
            path,
            outbox=config.tsdb is not None,
            max_meters_per_gateway=limits.max_meters_per_gateway,
            rejected=RejectedLimits(
                max_bytes=limits.rejected_max_bytes,
                retention_ms=int(limits.rejected_retention_days * 86_400_000),
            ),
            checks=checks,
            retention=policy,
            shared=config.mqtt.share_group is not None,
        )

    backoff = Backoff(first_s=RESTART_MIN_S, max_s=LEDGER_RETRY_MAX_S)
    reason: str | None = None
    waiting: tuple[uvicorn.Server, asyncio.Task[None]] | None = None

    def current() -> str:
        return reason or ""

    try:
        while True:
            try:
                ledger = await asyncio.to_thread(attempt)
            except DatabaseError as exc:
                if not _no_room(exc):
                    raise ServiceError(f"cannot open the ledger {path}: {exc}") from exc
                if reason != f"cannot open the ledger: {exc}":
                    reason = f"cannot open the ledger: {exc}"
                    log.warning(
                        "%s (%s); waiting for room, nothing is taken from the broker meanwhile", reason, path
                    )
                if waiting is None:
                    server = _EmbeddedServer(
                        uvicorn.Config(
                            waiting_app(current),
                            log_config=None,
                            access_log=False,
                            lifespan="off",
                        )
                    )
                    # A duplicate of the socket: the stand-in closes it, the API proper serves the original.
                    waiting = (
                        server,
                        asyncio.create_task(server.serve(sockets=[sock.dup()]), name="http-waiting"),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next_delay())
                if stop.is_set():
                    return None
            else:
                if reason is not None:
                    log.info("the ledger %s is open: starting", path)
                return ledger
    finally:
        if waiting is not None:
            waiting[0].should_exit = True
            await waiting[1]


async def _supervised(name: str, run: Callable[[], Awaitable[None]], metrics: CollectorMetrics) -> None:
    """Run a background task until it returns or is cancelled; when it fails, log and count it and start it
    again after a backoff (reset once it has run for RESTART_MAX_S), so one bug or one unforeseen error
    never takes ingestion, the TSDB writer or the notifications down for good."""
    backoff = Backoff(first_s=RESTART_MIN_S, max_s=RESTART_MAX_S)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await run()
        except Exception:
            if loop.time() - started >= RESTART_MAX_S:
                backoff.reset()
            wait = backoff.next_delay()
            log.exception("task %s failed; starting it again in %.1f s", name, wait)
            metrics.task_restarts.labels(task=name).inc()
            await asyncio.sleep(wait)
        else:
            return


async def _stop(tasks: set[asyncio.Task[Any]], api_task: asyncio.Task[Any], server: uvicorn.Server) -> None:
    """Cancel every task but the API, which is asked to finish its requests and close its lifespan;
    then wait until all have ended."""
    server.should_exit = True
    for task in tasks - {api_task}:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
