"""P_load learned from a machine's own days before (R10): right where the nameplate misleads, the
configured share where the history shows no two levels, and never from the day judged or later."""

from __future__ import annotations

import numpy as np

from collector.detectors import idle
from collector.detectors.common import Context
from collector.detectors.config import Idle, MeterConfig, Role, SiteConfig, Thresholds
from collector.detectors.load_level import learned_load_kw
from tests.test_detect_detectors import MINUTE, SHIFTS, hour, ms, series

START = ms(2025, 5, 5)  # a Monday
DAYS = 21
IDLE = (ms(2025, 5, 22, 9, 0), ms(2025, 5, 22, 9, 40))  # day 17, in the shift


def compressor(t: int) -> float:
    """Rated 37 kW but loaded at 10 kW in the 06:00-14:00 shift (not on Sundays), idling at 2.5 kW for 10
    minutes between jobs every hour, and for 40 minutes once; 0.1 kW off."""
    weekday = (t - START) // 86_400_000 % 7
    if weekday == 6 or not 6 <= hour(t) < 14:
        return 0.1
    wobble = 1 + 0.03 * np.sin(t / 3_600_000)
    if IDLE[0] <= t < IDLE[1] or (t // MINUTE) % 60 < 10:
        return 2.5 * wobble
    return 10.0 * wobble


def test_the_machine_s_own_levels_beat_its_nameplate() -> None:
    ts = np.arange(START, START + DAYS * 86_400_000, MINUTE, dtype=np.int64)
    kw = np.array([compressor(int(t)) for t in ts])
    p_load = learned_load_kw(ts, kw, p_off=1.85, fallback=11.1, rated_kw=37, days=28, min_days=14)
    day = (ts - START) // 86_400_000
    assert np.all(p_load[day < 14] == 11.1)  # not enough history yet: 30 % of rated
    learned = np.unique(p_load[day >= 14])  # between 2.5 and 10 kW: about their geometric mean, 5 kW
    assert np.all((learned > 4.0) & (learned < 6.5)), learned

    ctx = Context("s", "s.m", MeterConfig(role=Role.MACHINE, rated_kw=37), SiteConfig(calendar=SHIFTS))
    s = series(compressor, START, START + DAYS * 86_400_000)
    judged = [f for f in idle.detect(ctx, s) if f.start_ms >= START + 14 * 86_400_000]
    assert [(f.start_ms, f.end_ms) for f in judged] == [IDLE]
    nameplate = Context(
        "s", "s.m",
        MeterConfig(role=Role.MACHINE, rated_kw=37, thresholds=Thresholds(idle=Idle(learn_days=None))),
        SiteConfig(calendar=SHIFTS),
    )  # fmt: skip
    assert len([f for f in idle.detect(nameplate, s) if f.start_ms >= START + 14 * 86_400_000]) > 5


def test_one_level_keeps_the_configured_share_and_nothing_is_learned_from_later_days() -> None:
    ts = np.arange(START, START + DAYS * 86_400_000, MINUTE, dtype=np.int64)
    always_loaded = np.where((ts // MINUTE) % 1440 < 480, 10.0 * (1 + 0.03 * np.sin(ts / 3.6e6)), 0.1)
    assert np.all(learned_load_kw(ts, always_loaded, 1.85, 11.1, 37, 28, 14) == 11.1)

    kw = np.array([compressor(int(t)) for t in ts])
    full = learned_load_kw(ts, kw, 1.85, 11.1, 37, 28, 14)
    cut = ts < START + 16 * 86_400_000
    changed = kw.copy()
    changed[~cut] = 30.0  # whatever comes later
    assert np.array_equal(learned_load_kw(ts, changed, 1.85, 11.1, 37, 28, 14)[cut], full[cut])
    assert np.array_equal(learned_load_kw(ts[cut], kw[cut], 1.85, 11.1, 37, 28, 14), full[cut])
