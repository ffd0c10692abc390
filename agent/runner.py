"""The agent's main loop: poll every meter on clock-aligned ticks, one batch per cycle, until a signal.

Buses are polled concurrently (they are separate wires or connections); meters on one bus one after
another (a Modbus bus carries one request at a time). Ticks are aligned to the interval on the wall
clock (every 10 s: at :00, :10, ...) so readings from different gateways line up. A cycle that overruns
skips the ticks it missed instead of bunching polls together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager

from agent.clock import clock_state
from agent.config import AgentConfig, Bus
from agent.poller import read_meter
from agent.publisher import Publisher
from agent.transport import ModbusTcpReader, RegisterReader
from kilowatch.mqtt_contract import ClockState, Quality, Reading
from kilowatch.profiles import Profile, load_builtin

log = logging.getLogger(__name__)

ReaderFactory = Callable[[Bus], AbstractAsyncContextManager[RegisterReader]]


def open_bus(bus: Bus) -> ModbusTcpReader:
    """The reader for a configured bus."""
    return ModbusTcpReader(bus=bus.name, host=bus.host, port=bus.port, timeout_s=bus.timeout_s)


def next_tick(now: float, interval: float) -> float:
    """The first multiple of `interval` (seconds since the epoch) strictly after `now`."""
    return (math.floor(now / interval) + 1) * interval


async def poll_bus(
    bus: Bus, reader: RegisterReader, profiles: Mapping[str, Profile], clock: ClockState
) -> list[Reading]:
    """Read every meter on one bus in turn; a meter that fails in an unexpected way is logged and skipped."""
    readings = []
    for meter in bus.meters:
        try:
            readings.append(await read_meter(reader, profiles[meter.id], meter.unit, meter.id, clock))
        except Exception:  # one meter's bug must not stop the others; logged with its traceback
            log.exception("meter %s on bus %s: unexpected error; no reading this cycle", meter.id, bus.name)
    return readings


async def poll_all(
    config: AgentConfig,
    readers: Mapping[str, RegisterReader],
    profiles: Mapping[str, Profile],
    clock: ClockState,
) -> list[Reading]:
    """One cycle: every bus concurrently, readings in configuration order."""
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(
                poll_bus(bus, readers[bus.name], profiles, clock), name=f"kilowatch-bus-{bus.name}"
            )
            for bus in config.buses
        ]
    return [reading for task in tasks for reading in task.result()]


async def _poll_forever(
    config: AgentConfig,
    readers: Mapping[str, RegisterReader],
    profiles: Mapping[str, Profile],
    publisher: Publisher,
) -> None:
    interval = config.poll_interval_s
    last_clock: ClockState | None = None
    while True:
        await asyncio.sleep(max(0.0, next_tick(time.time(), interval) - time.time()))
        started = time.monotonic()
        clock = clock_state(config.clock.mode)
        if clock is not last_clock:
            level = logging.INFO if clock is ClockState.SYNCED else logging.WARNING
            log.log(level, "system clock is %s; readings are marked so", clock.value)
            last_clock = clock
        readings = await poll_all(config, readers, profiles, clock)
        if readings:
            batch = publisher.submit(readings)
            log.debug(
                "cycle seq %d: %d readings, %d with errors, %.2f s; %d batches queued",
                batch.seq,
                len(readings),
                sum(r.quality is Quality.ERROR for r in readings),
                time.monotonic() - started,
                publisher.pending,
            )
        elapsed = time.monotonic() - started
        if elapsed > interval:
            log.warning(
                "poll cycle took %.1f s, longer than poll_interval_s %s; ticks skipped", elapsed, interval
            )


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


async def run(
    config: AgentConfig,
    *,
    open_reader: ReaderFactory = open_bus,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the agent until SIGTERM, SIGINT or `stop` is set; then publish what it can and go offline."""
    stop = stop or asyncio.Event()
    profiles = {meter.id: load_builtin(meter.profile) for bus in config.buses for meter in bus.meters}
    log.info(
        "polling %d meters on %d buses every %s s; publishing to %s:%d as %s/%s",
        len(profiles),
        len(config.buses),
        config.poll_interval_s,
        config.mqtt.host,
        config.mqtt.port,
        config.site,
        config.gateway,
    )
    publisher = Publisher(config.mqtt, site=config.site, gateway=config.gateway, meters=config.meter_ids)
    with _stop_on_signals(stop):
        async with contextlib.AsyncExitStack() as stack:
            readers = {bus.name: await stack.enter_async_context(open_reader(bus)) for bus in config.buses}
            await stack.enter_async_context(publisher)
            polling = asyncio.create_task(
                _poll_forever(config, readers, profiles, publisher), name="kilowatch-poll-loop"
            )
            stopping = asyncio.create_task(stop.wait(), name="kilowatch-stop-signal")
            tasks = {polling, stopping}
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
            crash = None if polling.cancelled() else polling.exception()
            if crash is not None:
                raise crash  # a bug in the poll loop: the exit stack still stops the publisher cleanly
    log.info("stopped")
