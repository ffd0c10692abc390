"""Real services for tests: Mosquitto and VictoriaMetrics on free loopback ports in temporary folders.

A missing binary is a test failure with the install command in the message, never a skip: CI installs
them through `make test`, and a suite that quietly skips its real-service tests proves nothing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

INSTALL_HINT = "run `make test` (as root it installs: apt-get install mosquitto mosquitto-clients victoria-metrics mbpoll socat)"


def require_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if path is None:
        raise RuntimeError(f"{name} is not installed; {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the service is still starting: remember why, try again
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}")


async def eventually(predicate: Callable[[], Any], what: str, within_s: float = 15.0) -> Any:
    """`wait_until` for async tests: yields to the event loop so the code under test keeps running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not (result := predicate()):
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return result


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Process:
    """A child process whose output goes to a log file that failures can quote."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Mosquitto:
    host: str
    port: int
    process: Process

    @classmethod
    def start(cls, workdir: Path, *, extra_conf: str = "") -> Mosquitto:
        binary = require_binary("mosquitto")
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra_conf}\n")
        process = Process("mosquitto", [binary, "-c", str(conf)], workdir / "mosquitto.log").start()
        broker = cls("127.0.0.1", port, process)
        wait_until(lambda: port_open("127.0.0.1", port) or not process.alive(), 10, "mosquitto to listen")
        if not process.alive():
            raise RuntimeError(f"mosquitto exited at start:\n{process.log()}")
        return broker

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1) -> None:
        """Publish with the real `mosquitto_pub` client."""
        data = payload.encode() if isinstance(payload, str) else payload
        subprocess.run(
            [
                require_binary("mosquitto_pub"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-q",
                str(qos),
                "-t",
                topic,
                "-s",
            ],
            input=data,
            check=True,
            timeout=10,
        )

    def stop(self) -> None:
        self.process.stop()


@dataclass
class VictoriaMetrics:
    """VictoriaMetrics single node: takes the InfluxDB v2 write API at /api/v2/write."""

    url: str
    process: Process

    @classmethod
    def start(cls, workdir: Path) -> VictoriaMetrics:
        binary = require_binary("victoria-metrics")
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        process = Process(
            "victoria-metrics",
            [
                binary,
                f"-storageDataPath={workdir / 'data'}",
                f"-httpListenAddr=127.0.0.1:{port}",
                "-dedup.minScrapeInterval=1ms",
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-loggerLevel=WARN",
            ],
            workdir / "victoria-metrics.log",
        ).start()
        vm = cls(f"http://127.0.0.1:{port}", process)
        wait_until(vm.healthy, 20, "victoria-metrics /health")
        return vm

    def healthy(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"victoria-metrics exited at start:\n{self.process.log()}")
        with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """Every series matching `match`, as /api/v1/export's JSON lines (metric, values, timestamps).

        Flushes first: without it, fresh series become searchable only after several seconds.
        """
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5):  # noqa: S310 - loopback
            pass
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def stop(self) -> None:
        self.process.stop()


def write_collector_config(
    path: Path, broker: Mosquitto, *, ledger: Path, api_port: int, tsdb_url: str | None, client_id: str
) -> Path:
    """A collector.yaml pointing at `broker` (and a TSDB when given), for tests and benchmarks."""
    config: dict[str, Any] = {
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": client_id},
        "ledger": {"path": str(ledger)},
        "api": {"host": "127.0.0.1", "port": api_port},
    }
    if tsdb_url:
        config["tsdb"] = {"url": tsdb_url}
    path.write_text(yaml.safe_dump(config))
    return path
