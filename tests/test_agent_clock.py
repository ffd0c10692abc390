"""Clock trust from the kernel's adjtimex answer, and the configured overrides."""

from __future__ import annotations

import pytest

from agent.clock import STA_UNSYNC, TIME_ERROR, clock_state, kernel_clock_state, state_from_kernel
from agent.config import ClockMode
from kilowatch.mqtt_contract import ClockState

STA_PLL = 0x0001
TIME_OK = 0


@pytest.mark.parametrize(
    ("result", "status", "expected"),
    [
        (TIME_OK, STA_PLL, ClockState.SYNCED),
        (TIME_OK, 0, ClockState.SYNCED),
        (TIME_OK, STA_PLL | STA_UNSYNC, ClockState.UNSYNCED),
        (TIME_ERROR, 0, ClockState.UNSYNCED),
        (TIME_ERROR, STA_UNSYNC, ClockState.UNSYNCED),
        (1, STA_PLL, ClockState.SYNCED),  # TIME_INS: a leap second is pending, the clock is fine
        (-1, 0, ClockState.UNKNOWN),
    ],
)
def test_state_from_kernel(result: int, status: int, expected: ClockState) -> None:
    assert state_from_kernel(result, status) is expected


def test_configured_modes_override_the_kernel() -> None:
    assert clock_state(ClockMode.SYNCED) is ClockState.SYNCED
    assert clock_state(ClockMode.UNSYNCED) is ClockState.UNSYNCED
    assert clock_state(ClockMode.AUTO) is kernel_clock_state()


def test_this_linux_kernel_answers() -> None:
    assert kernel_clock_state() in (ClockState.SYNCED, ClockState.UNSYNCED)
