"""Helpers for the alert and notification tests: findings at fixed times and a clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collector.alerts import AlertStore
from collector.config import AlertSettings
from collector.detectors.findings import Detector, Finding
from collector.ledger import Ledger
from tests.collector_support import at


@dataclass
class FakeClock:
    """Wall-clock time the test sets; pass the instance as a store's `clock`."""

    now_ms: int

    def __call__(self) -> int:
        return self.now_ms


def finding(
    *,
    start_ms: int = at(19),
    end_ms: int | None = None,
    detected_at: int | None = None,
    wasted_kwh: float = 3.0,
    cost_vnd: float = 0.0,
    meter: str = "m1",
    site: str = "site1",
    detector: Detector = Detector.AFTER_HOURS,
    rule: str = "R4",
) -> Finding:
    return Finding(
        site=site,
        meter=meter,
        detector=detector,
        rule=rule,
        start_ms=start_ms,
        end_ms=end_ms,
        detected_at=start_ms + 30 * 60_000 if detected_at is None else detected_at,
        wasted_kwh=wasted_kwh,
        cost_vnd=cost_vnd,
        magnitude=6.0,
        message_en="6 kW left on after hours.",
        message_vi="6 kW vẫn chạy ngoài giờ làm việc.",
    )


def open_store(
    path: Path, clock: FakeClock, *, channels: tuple[str, ...] = (), tariff: float = 2000
) -> AlertStore:
    """An alert store in a ledger file, as the collector has it (the ledger creates the file first)."""
    Ledger(path).close()
    return AlertStore(path, settings=AlertSettings(tariff_vnd_per_kwh=tariff), channels=channels, clock=clock)
