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
from typing import Any, ClassVar

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


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [require_binary("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


@dataclass(frozen=True)
class TestCertificates:
    """A throwaway PKI made with the `openssl` command line: PEM files in `folder`, valid for two days.

    `ca` signed `server` (names localhost and 127.0.0.1), `elsewhere` (names only broker.elsewhere.test)
    and `client` (CN gw-01, for mutual TLS). `other_ca` signed nothing the broker uses. `client_key_encrypted`
    is `client_key` under the password `key-secret`.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name
    KEY_PASSWORD: ClassVar[str] = "key-secret"  # noqa: S105 - a throwaway test key

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def other_ca(self) -> Path:
        return self.folder / "other-ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def elsewhere_cert(self) -> Path:
        return self.folder / "elsewhere.pem"

    @property
    def elsewhere_key(self) -> Path:
        return self.folder / "elsewhere.key"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"

    @property
    def client_key_encrypted(self) -> Path:
        return self.folder / "client-encrypted.key"

    @classmethod
    def generate(cls, folder: Path) -> TestCertificates:
        folder.mkdir(parents=True, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for name in ("ca", "other-ca"):
            _openssl(
                "req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                "-subj", f"/CN=kilowatch test {name}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=folder,
            )  # fmt: skip
        leaves = {
            "server": ("/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
            "elsewhere": ("/CN=broker.elsewhere.test", "subjectAltName=DNS:broker.elsewhere.test\nextendedKeyUsage=serverAuth"),
            "client": ("/CN=gw-01", "extendedKeyUsage=clientAuth"),
        }  # fmt: skip
        for name, (subject, extensions) in leaves.items():
            (folder / f"{name}.ext").write_text(f"basicConstraints=CA:FALSE\n{extensions}\n")
            _openssl(
                "req",
                "-new",
                *ec,
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                subject,
                cwd=folder,
            )
            _openssl(
                "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
                cwd=folder,
            )  # fmt: skip
        _openssl(
            "pkey", "-in", "client.key", "-aes256", "-passout", f"pass:{cls.KEY_PASSWORD}",
            "-out", "client-encrypted.key",
            cwd=folder,
        )  # fmt: skip
        return cls(folder)


@dataclass(frozen=True)
class TlsListener:
    """What `Mosquitto.start(tls=...)` puts on its listener: the server certificate and the client policy."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False

    @classmethod
    def of(cls, certs: TestCertificates, *, require_certificate: bool = False) -> TlsListener:
        return cls(certs.ca, certs.server_cert, certs.server_key, require_certificate)

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
        """Start the (stopped) broker again with the same configuration, port and persistence file."""
        self.process.start()
        process = self.process
        wait_until(lambda: port_open(self.host, self.port) or not process.alive(), 10, "mosquitto to listen")
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
