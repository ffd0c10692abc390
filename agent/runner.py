"""The agent's main loop: one worker per bus, each polling on clock-aligned ticks, until a signal.

Buses are polled concurrently and independently (they are separate wires or connections): each bus worker
has its own cycle and hands its readings to the publisher as one batch, so a slow bus never delays a
fast one. Within a bus the worker serialises every transaction (see :mod:`agent.bus_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from agent.bus_worker import BusWorker, slots
from agent.clock import boot_id, clock_offset_ms, clock_state, now_ms
from agent.config import AgentConfig, Bus, ClockSettings, MetricsSettings, RtuBus, RtuOverTcpBus, TcpBus
from agent.metrics_server import HealthSource, MetricsServer, SpoolSource
from agent.publisher import Publisher
from agent.spool import Spool
from agent.transport import Link, ModbusReader, RegisterReader, RtuOverTcpLink, SerialPortLink, TcpLink
from kilowatch.mqtt_contract import ClockAnchor, ClockState, MeterHealth, Reading
from kilowatch.sdnotify import Liveness, supervise

log = logging.getLogger(__name__)

ReaderFactory = Callable[[Bus], AbstractAsyncContextManager[RegisterReader]]


def link_of(bus: Bus) -> Link:
    """Where a configured bus is."""
    match bus:
        case TcpBus():
            return TcpLink(bus.host, bus.port)
        case RtuOverTcpBus():
            return RtuOverTcpLink(bus.host, bus.port)
        case RtuBus():
            line = bus.line
            return SerialPortLink(
                device=bus.port,
                baud=line.baud,
                parity=line.parity,
                stopbits=line.stopbits,
                bytesize=line.bytesize,
            )


def open_bus(bus: Bus) -> ModbusReader:
    """The reader for a configured bus, with each meter's timeout; the longest pause after connect of
    its meters applies to the whole link."""
    timings = {meter.unit: bus.timing_of(meter) for meter in bus.meters}
    return ModbusReader(
        link_of(bus),
        bus=bus.name,
        timeout_s=max(t.timeout_s for t in timings.values()),
        unit_timeouts={unit: t.timeout_s for unit, t in timings.items()},
        pause_after_connect_s=max(t.pause_after_connect_s for t in timings.values()),
    )


class ClockWatch:
    """The gateway's clock state for each cycle, logged when it changes.

    When the clock becomes synchronised (or is at start), `on_sync` gets this boot's anchor: UTC minus
    the monotonic boot clock, which re-dates every reading of this boot stamped before.
    """

    def __init__(self, settings: ClockSettings, on_sync: Callable[[ClockAnchor], None]) -> None:
        self.settings = settings
        self.on_sync = on_sync
        self.last: ClockState | None = None

    def __call__(self) -> ClockState:
        state = clock_state(self.settings)
        if state is not self.last:
            level = logging.INFO if state is ClockState.SYNCED else logging.WARNING
            log.log(level, "system clock is %s; readings are marked so", state.value)
            self.last = state
            if state is ClockState.SYNCED and (boot := boot_id()) is not None:
                self.on_sync(ClockAnchor(boot_id=boot, offset_ms=clock_offset_ms(), synced_at=now_ms()))
        return state


def health_of(workers: Sequence[BusWorker]) -> dict[str, MeterHealth]:
    """Every meter's health now, by meter id."""
    return {
        slot.id: slot.health.snapshot(bus=worker.name, breaker=slot.breaker.state)
        for worker in workers
        for slot in worker.meters
    }


async def serve_metrics(
    stack: contextlib.AsyncExitStack,
    settings: MetricsSettings,
    health: HealthSource,
    spool: SpoolSource | None = None,
) -> None:
    """Start the metrics endpoint if enabled; one that cannot listen is logged, and polling goes on."""
    if not settings.enabled:
        return
    try:
        await stack.enter_async_context(
            MetricsServer(health, spool=spool, host=settings.host, port=settings.port)
        )
    except OSError as exc:
        log.error("metrics endpoint off: cannot listen on %s:%d (%s)", settings.host, settings.port, exc)


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


CANCEL_AGAIN_S = 1.0
"""A task still running this long after it was cancelled is cancelled again."""

HUNG_AFTER_S = 60.0
"""A bus whose cycle has not ended for three poll intervals plus this long is hung: systemd's watchdog
pings stop, and systemd restarts the agent (a cycle's own timeouts end it long before)."""


def beating(
    liveness: Liveness, name: str, submit: Callable[[list[Reading]], int | None]
) -> Callable[[list[Reading]], int | None]:
    """`submit` that also records the end of bus `name`'s cycle as progress."""

    def submit_and_beat(readings: list[Reading]) -> int | None:
        liveness.beat(name)
        return submit(readings)

    return submit_and_beat


async def _cancel(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until they end, repeating the cancel while one runs on: Python 3.11's
    ``asyncio.wait_for`` (under pymodbus' requests) swallows a cancel that arrives with the answer, and a
    bus loop that missed its cancel would poll for ever and hang the stop."""
    for task in tasks:
        task.cancel()
    while pending := {task for task in tasks if not task.done()}:
        _, running = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)
        for task in running:
            task.cancel()


async def _finish(tasks: set[asyncio.Task[int]]) -> None:
    """Wait for the spool's re-dating threads, raising what one raised. Cancelling would not stop a thread
    (``asyncio.to_thread``): it would go on writing to a spool about to be closed."""
    await asyncio.gather(*tasks)


M_ARENA_MAX = -8
"""glibc's mallopt parameter for the most malloc arenas (malloc.h)."""


def one_malloc_arena() -> None:
    """Have every thread allocate from the main heap, as glibc's ``MALLOC_ARENA_MAX=1`` does.

    glibc gives each thread that allocates an arena of its own: the spool's commits and name lookups run in
    asyncio's worker threads, whose arenas held 0.4-1.4 MB of RSS (32-200 meters, bench/agent_bus.py) while
    the main heap had room to spare. These threads allocate little, so sharing one arena costs no measurable
    CPU. Call it before any thread starts; without glibc's mallopt, nothing changes."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, 1)


async def run(
    config: AgentConfig,
    *,
    open_reader: ReaderFactory = open_bus,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the agent until SIGTERM, SIGINT or `stop` is set; then publish what it can and go offline."""
    stop = stop or asyncio.Event()
    log.info(
        "polling %d meters on %d buses every %s s; publishing to %s:%d as %s/%s",
        len(config.meter_ids),
        len(config.buses),
        config.poll_interval_s,
        config.mqtt.host,
        config.mqtt.port,
        config.site,
        config.gateway,
    )
    with _stop_on_signals(stop):
        async with contextlib.AsyncExitStack() as stack:
            spool = Spool(config.spool, boot_id=boot_id())
            stack.callback(spool.close)  # after the publisher's final flush: the exit stack unwinds backwards
            reanchoring: set[asyncio.Task[int]] = set()
            stack.push_async_callback(_finish, reanchoring)  # before the spool closes
            workers = [
                BusWorker(
                    name=bus.name,
                    reader=await stack.enter_async_context(open_reader(bus)),
                    meters=slots(bus),
                    report=spool.record_event,
                )
                for bus in config.buses
            ]
            publisher = Publisher(
                config.mqtt,
                site=config.site,
                gateway=config.gateway,
                spool=spool,
                max_inflight=config.spool.max_inflight,
                meters=config.meter_ids,
                health=lambda: health_of(workers),
                health_interval_s=config.health_interval_s,
            )

            def anchor(found: ClockAnchor) -> None:
                """Publish the anchor and re-date the spooled readings of this boot stamped before."""
                publisher.set_clock_anchor(found)
                task = asyncio.create_task(
                    asyncio.to_thread(spool.reanchor, found.boot_id, found.offset_ms),
                    name="kilowatch-spool-reanchor",
                )
                reanchoring.add(task)
                task.add_done_callback(reanchoring.discard)

            clock = ClockWatch(config.clock, anchor)
            await serve_metrics(stack, config.metrics, lambda: health_of(workers), spool.status)
            await stack.enter_async_context(publisher)
            liveness = Liveness((w.name for w in workers), 3 * config.poll_interval_s + HUNG_AFTER_S)
            polling = {
                asyncio.create_task(
                    worker.run(
                        config.poll_interval_s, clock, beating(liveness, worker.name, publisher.submit)
                    ),
                    name=f"kilowatch-bus-{worker.name}",
                )
                for worker in workers
            }
            stopping = asyncio.create_task(stop.wait(), name="kilowatch-stop-signal")
            systemd = asyncio.create_task(supervise(liveness), name="kilowatch-systemd-notify")
            tasks = {*polling, stopping, systemd}
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await _cancel(tasks)
            crashes = [exc for t in polling if not t.cancelled() and (exc := t.exception()) is not None]
            if crashes:
                raise crashes[0]  # a bug in a bus loop: the exit stack still stops the publisher cleanly
    log.info("stopped")
