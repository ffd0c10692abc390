"""Fixtures that start real services; see app/processes.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.processes import Mosquitto, VictoriaMetrics
from tests.alert_support import Received, webhook_receiver
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
