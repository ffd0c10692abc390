"""Helpers for the agent's tests: register maps holding chosen values, and waiting inside asyncio."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

import aiomqtt

from app.processes import Mosquitto, Process, require_binary
from kilowatch.profiles import Profile, Table
from kilowatch.quantities import out_of_range
from kilowatch.registers import encode


def register_map(profile: Profile, values: Mapping[str, float]) -> dict[tuple[Table, int], int]:
    """The words a meter with `profile` holds when it shows `values` (registers not in `values` absent)."""
    words: dict[tuple[Table, int], int] = {}
    for name, value in values.items():
        reg = profile.register(name)
        raw = (value - reg.offset) / reg.scale
        for i, word in enumerate(encode(raw, reg.type, reg.word_order)):
            words[(reg.table, reg.address + i)] = word
    return words


def full_map(profile: Profile, base: float = 1.0) -> tuple[dict[str, float], dict[tuple[Table, int], int]]:
    """Every register of `profile` holding a distinct exactly-representable value within its quantity's
    physical range (i / 64 where base + i * 0.5 is not), and its words."""
    values = {
        reg.quantity: base + i * 0.5 if out_of_range(reg.quantity, base + i * 0.5) is None else i / 64
        for i, reg in enumerate(profile.registers)
    }
    return values, register_map(profile, values)


def payload(message: aiomqtt.Message) -> bytes:
    """An MQTT message's payload as bytes (what a broker always delivers)."""
    assert isinstance(message.payload, bytes)
    return message.payload


async def kilowatch(*args: str) -> tuple[int, str, str]:
    """Run `python -m app ARGS` to completion without blocking the loop a simulator may run on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def late_broker(port: int, broker: Mosquitto, log: Path) -> Process:
    """A broker that "appears" on `port` when started: a socat forwarder to the running `broker`. A test
    subscribes to the real broker first, then starts this, so nothing the agent sends can race it."""
    return Process(
        "socat",
        [require_binary("socat"), f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
         f"TCP:{broker.host}:{broker.port}"],
        log,
    )  # fmt: skip
