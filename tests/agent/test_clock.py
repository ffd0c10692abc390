"""Clock trust from the kernel's adjtimex answer, and the configured overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.clock import (
    BOOT_ID_FILE,
    STA_UNSYNC,
    TIME_ERROR,
    boot_id,
    boottime_ms,
    clock_offset_ms,
    clock_state,
    kernel_clock_state,
    now_ms,
    state_from_kernel,
)
from agent.config import ClockMode, ClockSettings
from agent.poller import Poll, to_reading
from kilowatch.mqtt_contract import ClockState
from kilowatch.profiles import load_builtin

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
    assert clock_state(ClockSettings(mode=ClockMode.SYNCED)) is ClockState.SYNCED
    assert clock_state(ClockSettings(mode=ClockMode.UNSYNCED)) is ClockState.UNSYNCED
    assert clock_state(ClockSettings(mode=ClockMode.AUTO)) is kernel_clock_state()


def test_a_flag_file_says_synchronised_while_it_exists(tmp_path: Path) -> None:
    settings = ClockSettings(mode=ClockMode.FLAG_FILE, flag_file=tmp_path / "synchronized")
    assert clock_state(settings) is ClockState.UNSYNCED
    settings.flag_file.touch()  # what systemd-timesyncd does at its first synchronisation
    assert clock_state(settings) is ClockState.SYNCED


def test_this_linux_kernel_answers() -> None:
    assert kernel_clock_state() in (ClockState.SYNCED, ClockState.UNSYNCED)


def test_a_reading_carries_the_boot_clock_that_can_re_date_it() -> None:
    poll = Poll(ts=now_ms())
    reading = to_reading(poll, load_builtin("eastron-sdm630"), "m1", ClockState.UNSYNCED)
    assert reading.mono_ms == poll.mono_ms
    assert reading.mono_ms is not None
    assert 0 < reading.mono_ms <= boottime_ms()
    # Re-dated with the offset measured now, the reading lands where the system clock put it.
    assert abs(reading.mono_ms + clock_offset_ms() - reading.ts) < 1_000
    assert re.fullmatch(r"[0-9a-f-]{36}", boot_id() or "")
    assert boot_id() == BOOT_ID_FILE.read_text().strip()
