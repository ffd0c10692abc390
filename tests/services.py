"""Test-only helpers: a throwaway PKI made with openssl, and waiting inside async tests.

The processes the tests start (Mosquitto, VictoriaMetrics, the product's commands) come from
:mod:`app.processes`, shared with the demo, the evaluation and the benchmarks.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from app.processes import TlsListener, require_binary


async def eventually(predicate: Callable[[], Any], what: str, within_s: float = 15.0) -> Any:
    """`wait_until` for async tests: yields to the event loop so the code under test keeps running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not (result := predicate()):
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return result


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

    def listener(self, *, require_certificate: bool = False) -> TlsListener:
        """A Mosquitto TLS listener with the `server` certificate."""
        return TlsListener(self.ca, self.server_cert, self.server_key, require_certificate)

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
