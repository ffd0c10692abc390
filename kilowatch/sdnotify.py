"""systemd's service notifications (sd_notify(3)): READY=1 once started, WATCHDOG=1 while the main loop
makes progress, STOPPING=1 on the way out.

The protocol is one datagram to the AF_UNIX socket systemd names in ``$NOTIFY_SOCKET``; with no such
variable (not under systemd, or a unit without ``Type=notify``) nothing is sent. Written here rather than
taken from a library: the maintained binding (systemd-python) compiles against libsystemd headers, which
a Raspberry Pi gateway installing from a wheelhouse does not have, and the protocol is a single sendto.

The pings come from a task on the service's event loop, and only while `alive()` says the loops it
watches progress: an event loop blocked by a hung call, or a polling loop stuck in a cycle, stops them,
and systemd restarts the service after ``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping

log = logging.getLogger(__name__)


def notify(*fields: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``fields`` (``"READY=1"``, ...) to systemd; False when there is no socket to send to or the
    send failed (logged: a notification lost is no reason to stop the service)."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: its name starts with a NUL byte
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # a full queue on systemd's side must not stall the event loop
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd on %s: %s", environ["NOTIFY_SOCKET"], exc)
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between pings (half of ``WatchdogSec``, as sd_watchdog_enabled(3) advises), or None when
    systemd expects none from this process."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Liveness:
    """When each of several loops last made progress; alive while every one did within `stale_after_s`.

    A loop that never beat counts from when this was made, so a loop stuck in its first cycle is caught.
    """

    def __init__(
        self, names: Iterable[str], stale_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.stale_after_s = stale_after_s
        self.last = dict.fromkeys(names, clock())

    def beat(self, name: str) -> None:
        """`name` just made progress."""
        self.last[name] = self.clock()

    def stale(self) -> list[str]:
        """The loops without progress for longer than `stale_after_s`."""
        now = self.clock()
        return [name for name, at in self.last.items() if now - at > self.stale_after_s]

    def __call__(self) -> bool:
        return not self.stale()


async def supervise(alive: Callable[[], bool] = lambda: True) -> None:
    """Tell systemd the service is ready, then ping its watchdog while `alive()` holds, until cancelled
    (then tell it the service is stopping). Run it as a task once the service is up."""
    notify("READY=1")
    interval = watchdog_interval_s()
    try:
        if interval is None:
            await asyncio.Event().wait()  # no watchdog: only READY and STOPPING to send
        else:
            await _ping(interval, alive)
    finally:
        notify("STOPPING=1")


async def _ping(interval_s: float, alive: Callable[[], bool]) -> None:
    """WATCHDOG=1 every `interval_s` while `alive()`; the change either way is logged once."""
    pinging = True
    while True:
        if alive() != pinging:
            pinging = not pinging
            if pinging:
                log.info("main loop progresses again; watchdog pings resume")
            else:
                log.error("main loop stalled; watchdog pings stop and systemd will restart the service")
        if pinging:
            notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
