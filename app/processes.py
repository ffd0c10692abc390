"""Running the product's own commands as child processes on loopback: free ports, Mosquitto, waiting.

`kilowatch demo` and `kilowatch eval` both start real parts (broker, simulator, agent, collector) as the
installed commands, so what they show is the product, not a shortcut.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_or_free(port: int) -> int:
    """`port` if it can be listened on, else a free one."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn will: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def mosquitto_binary() -> str | None:
    """Debian installs Mosquitto in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def mosquitto_config(workdir: Path, port: int) -> Path:
    """A throwaway broker on loopback: anonymous, nothing persisted, and no cap on the messages it queues
    for a subscriber (Mosquitto's default of 1,000 silently drops the rest of a backlog published faster
    than the collector stores it)."""
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
    )
    return conf


def get_json(url: str, timeout_s: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback URL we built
        return json.load(response)


def get_text(url: str, timeout_s: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback URL we built
        return str(response.read().decode())


class Children:
    """Child processes with their logs in `workdir`; all of them are stopped on the way out."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=asyncio.subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        return proc

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.returncode is not None]

    async def stop(self) -> None:
        """Stop in reverse start order (the agent before the collector, the broker last)."""
        for proc in reversed(self.procs.values()):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def wait_for(what: str, check: Callable[[], Any], children: Children, limit_s: float) -> Any:
    """The first truthy result of `check` (polled; OSError and ValueError mean "not yet"); RuntimeError if
    a child dies meanwhile, TimeoutError after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if dead := children.dead():
            raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}; see {children.workdir}")
        with contextlib.suppress(OSError, ValueError):
            if result := check():
                return result
        await asyncio.sleep(0.3)
    raise TimeoutError(f"timed out after {limit_s:.0f}s waiting for {what}")
