"""The frozen-meter rule: every quantity that should move is consulted, and the counter's resolution, so
a low steady load shown in whole watts with a 3-decimal counter is not a frozen meter; a frozen stretch
that reaches the end of the data judged stays open and extends."""

from __future__ import annotations

import numpy as np

from collector.calendars import SiteCalendar
from collector.detectors import data_quality
from collector.detectors.common import Context
from collector.detectors.config import MeterConfig, Role, SiteConfig
from collector.detectors.run import detect_meter
from collector.detectors.series import Sample, Series

MINUTE = 60_000
START = 1_748_797_200_000  # 2025-06-02 00:00 UTC+7
CTX = Context(
    "s", "s.m", MeterConfig(role=Role.LIGHTING_CABINET, rated_kw=1), SiteConfig(calendar=SiteCalendar())
)


def standby(minutes: int, *, watts: float = 12.0, voltage: bool = True, frozen: range = range(0)) -> Series:
    """A cabinet drawing `watts` by day, shown in whole watts with a 3-decimal kWh counter (which counts
    0.001 kWh every 5 min at 12 W); voltage moves a little unless `voltage` is False. Over the minutes
    `frozen` every register repeats what it showed at their first."""
    samples = []
    for i in range(minutes):
        j = frozen.start if i in frozen else i
        kwh = int((1000.0 + watts / 1000 * j / 60) * 1000) / 1000
        volts = 230.0 + (j * 7 % 11) / 10
        moving = (volts, 50.0 + (j * 3 % 5) / 100) if voltage else ()
        samples.append(Sample(START + i * MINUTE, round(watts) / 1000, kwh, moving))
    return Series.of("s.m", samples, poll_ms=MINUTE, start_ms=START, end_ms=START + minutes * MINUTE)


def rules(series: Series) -> list[tuple[str, int, int | None]]:
    return [(f.rule, f.start_ms, f.end_ms) for f in data_quality.detect(CTX, series)]


def test_a_low_steady_load_at_meter_resolution_is_not_frozen() -> None:
    assert rules(standby(12 * 60)) == []
    assert rules(standby(12 * 60, voltage=False)) == []  # power and counter only: the counter says enough


def test_registers_that_stop_are_frozen_with_or_without_voltage() -> None:
    stuck = range(60, 120)
    expected = [("frozen", START + 60 * MINUTE, START + 120 * MINUTE)]
    assert rules(standby(4 * 60, frozen=stuck)) == expected
    # Without voltage only the counter can tell: at 12 W it owes two steps of 0.001 kWh after 10 minutes.
    [finding] = data_quality.detect(CTX, standby(4 * 60, voltage=False, frozen=stuck))
    assert (finding.start_ms, finding.end_ms) == expected[0][1:]
    assert finding.detected_at == START + 70 * MINUTE


def test_a_short_stop_the_counter_cannot_prove_is_not_frozen() -> None:
    assert rules(standby(4 * 60, voltage=False, frozen=range(60, 68))) == []


def test_frozen_up_to_the_last_reading_stays_open_and_extends() -> None:
    stuck = range(60, 10**6)
    assert rules(standby(90, frozen=stuck)) == [("frozen", START + 60 * MINUTE, None)]
    assert rules(standby(180, frozen=stuck)) == [("frozen", START + 60 * MINUTE, None)]
    assert rules(standby(180, frozen=range(60, 150))) == [
        ("frozen", START + 60 * MINUTE, START + 150 * MINUTE)
    ]


def frozen_findings(series: Series) -> list[tuple[int, int | None]]:
    return [(f.start_ms, f.end_ms) for f in detect_meter(CTX, series) if f.rule == "frozen"]


def test_an_episode_that_comes_back_within_the_hold_off_is_one_alert() -> None:
    def stuck_twice(minutes: int) -> Series:
        first, second = standby(minutes, frozen=range(60, 80)), standby(minutes, frozen=range(95, 120))
        keep = np.arange(first.ts.size) >= 90
        return Series.from_arrays(
            "s.m", first.ts, first.kw, np.where(keep, second.energy, first.energy),
            poll_ms=MINUTE, start_ms=first.start_ms, end_ms=first.end_ms,
            moving=np.where(keep[:, None], second.moving, first.moving),
        )  # fmt: skip

    assert frozen_findings(stuck_twice(4 * 60)) == [(START + 60 * MINUTE, START + 120 * MINUTE)]
    # Cleared 20 minutes before the end of the data judged: it may yet come back, so it is still open.
    assert frozen_findings(standby(140, frozen=range(60, 120))) == [(START + 60 * MINUTE, None)]
