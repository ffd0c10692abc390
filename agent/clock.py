"""Whether the gateway's system clock can be trusted, as the kernel sees it.

A Raspberry Pi has no RTC: after a power cut it boots at its last saved time until NTP syncs. NTP
daemons (systemd-timesyncd, chrony, ntpd) clear the kernel's STA_UNSYNC flag once synchronised, so
``adjtimex(2)`` in read-only mode tells us without asking any daemon.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from agent.config import ClockMode, ClockSettings
from kilowatch.mqtt_contract import ClockState

STA_UNSYNC = 0x0040
"""`status` bit: the clock is not synchronised."""
TIME_ERROR = 5
"""adjtimex return value: the clock is not synchronised (same meaning as STA_UNSYNC)."""


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h>; only `modes` (0 = read only) and `status` are used."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def now_ms() -> int:
    """The system clock as the wire contract stamps time: UTC milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def boottime_ms() -> int:
    """CLOCK_BOOTTIME in ms: monotonic since boot, never stepped by NTP, counts while suspended."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


@cache
def boot_id() -> str | None:
    """This boot's id, which names the clock `boottime_ms` counts on; None where the kernel has none."""
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


def clock_offset_ms() -> int:
    """UTC minus boottime now: added to a reading's `mono_ms`, it gives the reading's UTC time."""
    return now_ms() - boottime_ms()


def state_from_kernel(result: int, status: int) -> ClockState:
    """Interpret ``adjtimex`` output: its return value and the `status` bits."""
    if result < 0:
        return ClockState.UNKNOWN
    if result == TIME_ERROR or status & STA_UNSYNC:
        return ClockState.UNSYNCED
    return ClockState.SYNCED


@cache
def _adjtimex() -> Callable[[Any], int] | None:
    """libc's adjtimex, looked up once; None where the C library has none (not Linux)."""
    try:
        function: Callable[[Any], int] = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    return function


def kernel_clock_state() -> ClockState:
    """Ask the kernel; UNKNOWN where there is no ``adjtimex``."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return ClockState.UNKNOWN
    timex = _Timex()  # modes = 0: read, never adjust
    return state_from_kernel(int(adjtimex(ctypes.byref(timex))), timex.status)


def clock_state(settings: ClockSettings) -> ClockState:
    """The clock state readings are stamped with, as configured."""
    match settings.mode:
        case ClockMode.SYNCED:
            return ClockState.SYNCED
        case ClockMode.UNSYNCED:
            return ClockState.UNSYNCED
        case ClockMode.FLAG_FILE:
            return ClockState.SYNCED if settings.flag_file.exists() else ClockState.UNSYNCED
        case ClockMode.AUTO:
            return kernel_clock_state()
