"""Every shipped profile, served by `kilowatch sim serve --profile ID` on loopback TCP, read back by the
agent through its read planner, and scanned with every profile's fingerprint.

The served meter is replayed in-process for the truth: the same seed, start and unit give the same
snapshot, and at --speed 0.001 the first one-second update window lasts a quarter of an hour of real time,
so the subprocess and the replay show the same window throughout the test.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from datetime import datetime

import pytest

from agent.planner import plan
from agent.poller import poll
from agent.scan import identify
from agent.transport import ModbusReader, TcpLink
from app.processes import Process, wait_until
from kilowatch.profiles import Profile, builtin_ids, load_builtin
from kilowatch.registers import INTEGER_BITS
from sim.server import SimServer

START = "2026-03-03T10:00:00+07:00"
SERVING = re.compile(r"^serving 1 meter .* on tcp 127\.0\.0\.1:(\d+)$", re.MULTILINE)
PROFILES = builtin_ids()


def resolution(profile: Profile, quantity: str) -> float:
    """Half the step between two readings of an integer register (0 for a float): the most a stored value
    may differ from the truth it was rounded from."""
    reg = profile.register(quantity)
    if reg.type not in INTEGER_BITS:
        return 0.0
    factor = 10.0 ** profile.parameter(reg.scale_factor).value if reg.scale_factor else 1.0
    return abs(reg.scale) * factor / 2


@pytest.fixture(scope="module", params=PROFILES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Profile, int]]:
    """A simulator subprocess serving unit 1 with the profile, and its port."""
    profile_id: str = request.param
    log = tmp_path_factory.mktemp(profile_id) / "sim.log"
    sim = Process(
        "sim",
        [sys.executable, "-m", "app", "sim", "serve", "--profile", profile_id, "--tcp", "127.0.0.1:0",
         "--speed", "0.001", "--start", START],
        log,
    ).start()  # fmt: skip
    try:
        match = wait_until(lambda: SERVING.search(sim.log()) or not sim.alive(), 30, "the 'serving' line")
        assert isinstance(match, re.Match), sim.log()
        yield load_builtin(profile_id), int(match[1])
    finally:
        sim.stop()


def truth(profile: Profile) -> dict[str, float]:
    """What the served unit 1 shows: the same meter replayed in-process, never started."""
    replay = SimServer(profile=profile, units=[1], start=datetime.fromisoformat(START), speed=0.001)
    return dict(replay.values(1))


@pytest.mark.services
async def test_the_agent_reads_every_quantity_back(served: tuple[Profile, int]) -> None:
    profile, port = served
    shown = truth(profile)
    stored = profile.decode(profile.encode(shown))
    async with ModbusReader(TcpLink("127.0.0.1", port), bus="sim", timeout_s=5) as reader:
        result = await poll(reader, profile, 1, plan(profile))
    assert result.errors == {}, f"{profile.id}: {result.errors}"
    assert set(result.values) == {reg.quantity for reg in profile.registers}
    for quantity, value in result.values.items():
        # the agent gives values at the meter's precision (agent.decoder): float32 digits, no binary noise
        expected = stored[quantity]
        assert expected is not None
        assert math.isclose(value, expected, rel_tol=1e-7, abs_tol=1e-30), (
            f"{profile.id}: {quantity} read {value}, the meter holds {stored[quantity]}"
        )
        allowed = resolution(profile, quantity) + 1e-6 * abs(shown[quantity]) + 1e-9
        assert math.isclose(value, shown[quantity], abs_tol=allowed), (
            f"{profile.id}: {quantity} reads {value}, the meter shows {shown[quantity]} "
            f"(the register cannot hold it: out of range for its type and scale?)"
        )


@pytest.mark.services
async def test_a_scan_recognises_exactly_the_served_profile(served: tuple[Profile, int]) -> None:
    profile, port = served
    matched = []
    async with ModbusReader(TcpLink("127.0.0.1", port), bus="sim", timeout_s=5) as reader:
        for other in PROFILES:
            if await identify(reader, 1, [load_builtin(other)]) == other:
                matched.append(other)
    assert matched == [profile.id], (
        f"serving {profile.id}, the fingerprints of {matched or 'no profile'} matched: "
        + ("" if profile.id in matched else f"{profile.id}'s own fingerprint fails on its own map; ")
        + ", ".join(f"{other} clashes with {profile.id}" for other in matched if other != profile.id)
    )
