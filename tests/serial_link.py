"""Serial cables for tests: socat pseudo-terminals linked to each other or to a TCP port.

Bytes written to one end come out of the other, as over a null-modem cable; baud rate and parity are
accepted but not enforced, so tests exercise framing and timing logic, not line physics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.processes import Process, require_binary, wait_until


@dataclass(frozen=True)
class SerialLink:
    """The two ends of a cable: serve on `a`, open `b` as the master (or the other way round)."""

    a: Path
    b: Path


class Socat:
    """socat joining two addresses, the pseudo-terminals among them appearing at `links`; a context manager."""

    def __init__(self, workdir: Path, addresses: tuple[str, str], links: tuple[Path, ...]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.links = links
        self._process = Process(
            "socat", [require_binary("socat"), "-d", "-d", *addresses], workdir / "socat.log"
        )

    def __enter__(self) -> Socat:
        self._process.start()
        try:
            wait_until(
                lambda: all(link.exists() for link in self.links) or not self._process.alive(),
                10, "socat's pseudo-terminal links",
            )  # fmt: skip
            if not self._process.alive():
                raise RuntimeError(f"socat exited early: {self._process.log()}")
        except BaseException:
            self._process.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._process.stop()


def pty(link: Path) -> str:
    """socat's address of a raw pseudo-terminal reachable at `link`."""
    return f"pty,raw,echo=0,link={link}"


@contextmanager
def serial_pair(workdir: Path) -> Iterator[SerialLink]:
    """Two pseudo-terminals wired together, at ``workdir/a`` and ``workdir/b``."""
    link = SerialLink(workdir / "a", workdir / "b")
    with Socat(workdir, (pty(link.a), pty(link.b)), (link.a, link.b)):
        yield link


@contextmanager
def virtual_com_port(workdir: Path, host: str, port: int) -> Iterator[Path]:
    """A pseudo-terminal whose bytes travel to a TCP port and back, as a serial server's COM-port driver."""
    com = workdir / "com"
    with Socat(workdir, (pty(com), f"tcp:{host}:{port}"), (com,)):
        yield com
