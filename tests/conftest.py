"""Fixtures that start real services; see app/processes.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.processes import Mosquitto, PostgreSQL, VictoriaMetrics
from tests.alert_support import Received, webhook_receiver
from tests.ledger_support import BACKENDS, LedgerAt, ledgers
from tests.serial_link import SerialLink, serial_pair


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto on a free loopback port, anonymous, no persistence."""
    broker = Mosquitto.start(tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A fresh VictoriaMetrics single node (dedup on) on a free loopback port."""
    vm = VictoriaMetrics.start(tmp_path / "victoria-metrics")
    yield vm
    vm.stop()


@pytest.fixture(scope="session")
def postgresql(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgreSQL]:
    """One PostgreSQL server for the session (each test that needs a ledger on it gets a database of its
    own from :func:`ledger_at`)."""
    server = PostgreSQL.start(tmp_path_factory.mktemp("postgresql"))
    yield server
    server.remove()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The ledger's backend a test runs on: each test that uses it runs on both."""
    return str(request.param)


@pytest.fixture
def ledger_at(backend: str, tmp_path: Path, postgresql_if: Callable[[], PostgreSQL]) -> Iterator[LedgerAt]:
    """Fresh ledgers on the test's backend: ``ledger_at(name)`` is a SQLite file in `tmp_path` or a new
    database on the session's PostgreSQL (started only when a test asks for it)."""
    with ledgers(backend, tmp_path, postgresql_if) as ledger_at:
        yield ledger_at


@pytest.fixture
def postgresql_if(request: pytest.FixtureRequest) -> Callable[[], PostgreSQL]:
    """The session's PostgreSQL, started when first called (a test on SQLite never starts it)."""

    def server() -> PostgreSQL:
        found: PostgreSQL = request.getfixturevalue("postgresql")
        return found

    return server


@pytest.fixture
def serial_link(tmp_path: Path) -> Iterator[SerialLink]:
    """A fresh socat pseudo-terminal pair (a serial cable): serve on ``.a``, open ``.b`` as the master."""
    with serial_pair(tmp_path / "serial") as link:
        yield link


@pytest.fixture
def hook() -> Iterator[tuple[str, Received]]:
    """A real local webhook receiver: its URL and the (headers, body) of every POST it got."""
    with webhook_receiver() as receiver:
        yield receiver
