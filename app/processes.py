"""Real processes on loopback: the product's own commands, Mosquitto and VictoriaMetrics, free ports, waiting.

`kilowatch demo` and `kilowatch eval` start real parts (broker, simulator, agent, collector) as the installed
commands, so what they show is the product, not a shortcut; the tests and the benchmarks start the same
processes with the same helpers. A missing binary is an error with the install command in its message, never
a skip: a suite that quietly skips its real-service tests proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

INSTALL_HINT = "run `make test` (as root it installs: apt-get install mosquitto mosquitto-clients victoria-metrics mbpoll socat postgresql)"
UNBOUNDED_QUEUE = "max_queued_messages 0"
"""Mosquitto configuration for a subscriber that must get a whole backlog: the default cap of 1,000 queued
messages silently drops the rest of one published faster than the collector stores it."""


def find_binary(name: str) -> str | None:
    """Debian installs Mosquitto and VictoriaMetrics in /usr/sbin or /usr/bin, not on every user's PATH."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()),
        None,
    )


def require_binary(name: str) -> str:
    if (path := find_binary(name)) is None:
        raise RuntimeError(f"{name} is not installed; {INSTALL_HINT}")
    return path


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


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def get_json(url: str, timeout_s: float = 2.0, *, key: str | None = None) -> Any:
    """GET `url` as JSON, with the API key `key` if given."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback URL we built
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - loopback URL we built
        return json.load(response)


def get_text(url: str, timeout_s: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback URL we built
        return str(response.read().decode())


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


class Children:
    """Child processes of an asyncio program with their logs in `workdir`; all are stopped on the way out."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[Process] = []

    @staticmethod
    def stopped_on_sigterm() -> None:
        """Take SIGTERM (systemd, `kill`, a timeout) as Ctrl-C, so that the program's way out stops its
        children: by default SIGTERM ends Python at once and they keep running, ports and all."""
        signal.signal(signal.SIGTERM, signal.default_int_handler)

    def start(self, name: str, *args: str) -> Process:
        return self.add(Process(name, list(args), self.workdir / f"{name}.log").start())

    def add(self, process: Process) -> Process:
        """Stop `process` with the others (started elsewhere, e.g. by `Mosquitto.start`)."""
        self.processes.append(process)
        return process

    def dead(self) -> list[str]:
        return [process.name for process in self.processes if not process.alive()]

    async def stop(self) -> None:
        """Stop in reverse start order (the agent before the collector, the broker last)."""
        for process in reversed(self.processes):
            await asyncio.to_thread(process.stop)


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


@dataclass(frozen=True)
class TlsListener:
    """What `Mosquitto.start(tls=...)` puts on its listener: the server certificate and the client policy."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False

    def conf(self) -> str:
        return (
            f"cafile {self.ca_file}\ncertfile {self.cert_file}\nkeyfile {self.key_file}\n"
            f"require_certificate {str(self.require_certificate).lower()}\ntls_version tlsv1.2\n"
        )


@dataclass
class Mosquitto:
    host: str
    port: int
    process: Process

    @classmethod
    def start(cls, workdir: Path, *, extra_conf: str = "", tls: TlsListener | None = None) -> Mosquitto:
        """Mosquitto on a free loopback port, anonymous, without persistence, plus `extra_conf`.

        With `tls`, the listener speaks only TLS (and the broker runs as root when started as root, so it can
        read the certificates in a test folder).
        """
        port = free_port()
        listener = f"listener {port} 127.0.0.1\n"
        if tls is not None:
            listener += tls.conf()
            if not any(line.split()[:1] == ["user"] for line in extra_conf.splitlines()):
                listener += "user root\n"
        return cls.run(workdir, f"{listener}allow_anonymous true\npersistence false\n{extra_conf}\n", port)

    @classmethod
    def run(cls, workdir: Path, conf_text: str, port: int) -> Mosquitto:
        """Mosquitto with exactly `conf_text` (as workdir/mosquitto.conf); `port` is the listener to wait for."""
        binary = require_binary("mosquitto")
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        conf.write_text(conf_text)
        process = Process("mosquitto", [binary, "-c", str(conf)], workdir / "mosquitto.log")
        broker = cls("127.0.0.1", port, process)
        broker.restart()
        return broker

    def restart(self) -> None:
        """Start the (stopped) broker again with the same configuration, port and persistence file; a broker
        that does not listen within 10 s is stopped, not left behind."""
        process = self.process.start()
        try:
            wait_until(
                lambda: port_open(self.host, self.port) or not process.alive(), 10, "mosquitto to listen"
            )
        except TimeoutError:
            process.stop()
            raise
        if not process.alive():
            raise RuntimeError(f"mosquitto exited at start:\n{process.log()}")

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


POSTGRESQL_USER = "kilowatch"
"""The superuser a test or demo PostgreSQL is initialised with (its password is random, per server)."""


def postgresql_bindir() -> Path:
    """The newest PostgreSQL server that Debian installed (its binaries are not on PATH)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise RuntimeError(f"postgresql is not installed; {INSTALL_HINT}")
    return found[-1].parent


@dataclass
class PostgreSQL:
    """A PostgreSQL server of its own in a temporary directory, on a free loopback port, with password
    (SCRAM) authentication on TCP.

    ``initdb`` and ``postgres`` refuse to run as root: as root they run as the ``postgres`` user (Debian's
    package creates it), in a directory that user owns.
    """

    port: int
    password: str
    datadir: Path
    process: Process
    _bindir: Path = field(repr=False)

    @classmethod
    def start(cls, workdir: Path) -> PostgreSQL:
        bindir = postgresql_bindir()
        workdir.mkdir(parents=True, exist_ok=True)
        # The data directory lives outside `workdir`: pytest's temporary folders are private to their user.
        home = Path(tempfile.mkdtemp(prefix="kilowatch-postgresql-"))
        password = secrets.token_urlsafe(16)
        (home / "pwfile").write_text(password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (home, home / "pwfile"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        datadir = home / "data"
        subprocess.run(
            [*_as_postgres(), str(bindir / "initdb"), "-D", str(datadir), "-U", POSTGRESQL_USER, "-E", "UTF8",
             "--locale=C.UTF-8", f"--pwfile={home / 'pwfile'}", "--auth-local=trust", "--auth-host=scram-sha-256",
             "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server = cls(
            free_port(), password, datadir, Process("postgresql", [], workdir / "postgresql.log"), bindir
        )
        server._run()
        return server

    def _run(self) -> None:
        # fsync off: a test server's data never has to survive a power cut, and the suite runs faster.
        self.process.args = [
            *_as_postgres(), str(self._bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
            "-k", str(self.datadir.parent), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "max_connections=300", "-c", "shared_buffers=64MB",
        ]  # fmt: skip
        self.process.start()
        wait_until(self.ready, 30, "postgresql to accept connections")

    def ready(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"postgresql exited at start:\n{self.process.log()}")
        probe = [str(self._bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, check=False, timeout=10).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{POSTGRESQL_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended, their transactions rolled back."""
        if self.process.alive():
            subprocess.run(
                [*_as_postgres(), str(self._bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast",
                 "-w"],
                check=False, capture_output=True, timeout=60,
            )  # fmt: skip
        self.process.stop()

    def restart(self) -> None:
        """Stop and start again on the same port, with the same data."""
        self.stop()
        self._run()

    def remove(self) -> None:
        """Stop and delete the data."""
        self.stop()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def write_collector_config(
    path: Path,
    broker: Mosquitto,
    *,
    ledger: Path | str,
    api_port: int,
    tsdb_url: str | None,
    client_id: str,
    retention_days: int | None = None,
) -> Path:
    """A collector.yaml pointing at `broker` (and a TSDB when given), for tests and benchmarks, with its
    ledger in the SQLite file `ledger` or the PostgreSQL database at the URL `ledger`; `retention_days`
    widens the window of plausible times for data stamped in the past."""
    config: dict[str, Any] = {
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": client_id},
        "ledger": {"path": str(ledger)} if isinstance(ledger, Path) else {"url": ledger},
        # /metrics open on these loopback test and benchmark collectors; the API routes still need a key.
        "api": {"host": "127.0.0.1", "port": api_port, "metrics_auth": "none"},
    }
    if retention_days is not None:
        config["plausibility"] = {"retention_days": retention_days}
    if tsdb_url:
        config["tsdb"] = {"url": tsdb_url}
    path.write_text(yaml.safe_dump(config))
    return path
