"""P_load learned from a machine's own days before (R10): right where the nameplate misleads, the
configured share where the history shows no two levels, and never from the day judged or later."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from collector.detectors import idle
from collector.detectors.common import Context
from collector.detectors.config import Idle, MeterConfig, Role, SiteConfig, Thresholds
from collector.detectors.load_level import Floats, learned_load_kw, learned_off_kw
from tests.collector.detectors.test_detectors import MINUTE, SHIFTS, hour, ms, series

START = ms(2025, 5, 5)  # a Monday
DAYS = 21
IDLE = (ms(2025, 5, 22, 9, 0), ms(2025, 5, 22, 9, 40))  # day 17, in the shift


def compressor(t: int) -> float:
    """Rated 37 kW but loaded at 10 kW in the 06:00-14:00 shift (not on Sundays), idling at 2.5 kW for 10
    minutes between jobs every hour, and for 40 minutes once; 0.1 kW off."""
    weekday = (t - START) // 86_400_000 % 7
    if weekday == 6 or not 6 <= hour(t) < 14:
        return 0.1
    wobble: float = 1 + 0.03 * np.sin(t / 3_600_000)
    if IDLE[0] <= t < IDLE[1] or (t // MINUTE) % 60 < 10:
        return 2.5 * wobble
    return 10.0 * wobble


def compressor_load(ts: npt.NDArray[np.int64], kw: Floats) -> Floats:
    """The compressor's P_load: 5 % and 30 % of its rated 37 kW configured, 28 days learned from (14 needed)."""
    return learned_load_kw(
        ts, kw, np.full(ts.size, 1.85), 1.85, fallback=11.1, rated_kw=37, days=28, min_days=14
    )


def test_the_machine_s_own_levels_beat_its_nameplate() -> None:
    ts = np.arange(START, START + DAYS * 86_400_000, MINUTE, dtype=np.int64)
    kw = np.array([compressor(int(t)) for t in ts])
    p_load = compressor_load(ts, kw)
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
    assert np.all(compressor_load(ts, always_loaded) == 11.1)

    kw = np.array([compressor(int(t)) for t in ts])
    full = compressor_load(ts, kw)
    cut = ts < START + 16 * 86_400_000
    changed = kw.copy()
    changed[~cut] = 30.0  # whatever comes later
    assert np.array_equal(compressor_load(ts, changed)[cut], full[cut])
    assert np.array_equal(compressor_load(ts[cut], kw[cut]), full[cut])


NOISY_IDLE = (ms(2025, 5, 22, 20, 0), ms(2025, 5, 22, 20, 30))  # day 17, after the shift


def noisy_press(t: int) -> float:
    """Rated 20 kW (P_off 1 kW by share), loaded at 14 kW in the 06:00-14:00 shift but for a real idle
    spell at 5 kW once after it; off, its meter reads 0.2 kW with 1.2 kW of noise (a coarse current
    transformer near zero)."""
    if NOISY_IDLE[0] <= t < NOISY_IDLE[1]:
        return 5.0
    weekday = (t - START) // 86_400_000 % 7
    if weekday != 6 and 6 <= hour(t) < 14:
        return 14.0
    return 0.2 + 1.2 * float(np.random.default_rng(t).standard_normal())


def press(factor: float) -> Context:
    idle_settings = Idle(load_kw=9.0, off_noise_factor=factor)
    meter = MeterConfig(role=Role.MACHINE, rated_kw=20, thresholds=Thresholds(idle=idle_settings))
    return Context("s", "s.m", meter, SiteConfig(calendar=SHIFTS))


def test_p_off_rises_above_a_noisy_meter_s_off_readings() -> None:
    ts = np.arange(START, START + DAYS * 86_400_000, MINUTE, dtype=np.int64)
    kw = np.array([noisy_press(int(t)) for t in ts])
    p_off = learned_off_kw(ts, kw, floor=1.0, factor=3.0, days=28, min_days=14)
    day = (ts - START) // 86_400_000
    assert np.all(p_off[day < 14] == 1.0)  # not enough history yet: 5 % of rated
    learned = np.unique(p_off[day >= 14])  # three times the noise seen below 1 kW: a lower bound of 3.6
    assert np.all((learned > 2.0) & (learned < 3.6)), learned

    s = series(noisy_press, START, START + DAYS * 86_400_000)
    judged = [f for f in idle.detect(press(3.0), s) if f.start_ms >= START + 14 * 86_400_000]
    assert [(f.start_ms, f.end_ms) for f in judged] == [NOISY_IDLE]
    by_share = [f for f in idle.detect(press(0.0), s) if f.start_ms >= START + 14 * 86_400_000]
    assert len(by_share) > 1  # the noise of a stopped machine passes for idling
