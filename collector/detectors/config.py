"""Detection settings per site and meter: role, rated kW, calendar, tariff and thresholds.

Defaults are domain.md's; a YAML file (``kilowatch`` reads it with :func:`load_sites`) overrides any of
them, and a bad value is refused naming the file, the line and the key.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collector.calendars import SiteCalendar
from kilowatch import yamlconfig
from kilowatch.calendars import Band


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(StrEnum):
    OFFICE_MAIN = "office_main"
    SUB_METER = "sub_meter"
    LIGHTING_CABINET = "lighting_cabinet"
    ADVERTISING = "advertising"
    MACHINE = "machine"


class Tariff(_Model):
    """VND per kWh by time-of-use band (EVN business tariff, under 6 kV, as of 2023; configure yours)."""

    peak: float = Field(4587.0, ge=0)
    normal: float = Field(2666.0, ge=0)
    off_peak: float = Field(1622.0, ge=0)

    def price(self, band: Band) -> float:
        return {Band.PEAK: self.peak, Band.NORMAL: self.normal, Band.OFF_PEAK: self.off_peak}[band]


class AfterHours(_Model):
    base_quantile: float = Field(0.10, gt=0, lt=1)
    peak_quantile: float = Field(0.975, gt=0, lt=1)
    trailing_days: int = Field(28, ge=1)
    open_ratio: float = Field(1.25, gt=1, description="open above max(open_ratio*B, B + peak_share*(peak-B))")
    peak_share: float = Field(0.10, gt=0, lt=1)
    open_intervals: int = Field(4, ge=1)
    clear_ratio: float = Field(1.1, gt=0)
    clear_intervals: int = Field(2, ge=1)
    essential_kw: float | None = Field(None, ge=0, description="a configured 24/7 base load instead of B")


class Idle(_Model):
    off_share: float = Field(0.05, gt=0, lt=1, description="P_off as a share of rated kW")
    off_noise_factor: float = Field(
        3.0,
        ge=0,
        description="P_off at least this many times the meter's noise while the machine is off, learned "
        "like P_load (0: the share of rated kW only)",
    )
    load_share: float = Field(
        0.30,
        gt=0,
        lt=1,
        description="P_load as a share of rated kW, unless load_kw is given or P_load is learned",
    )
    load_kw: float | None = Field(None, gt=0)
    learn_days: int | None = Field(
        28,
        ge=1,
        description="learn P_load and P_off's noise from the machine's readings of this many days before each "
        "day (null: never)",
    )
    learn_min_days: int = Field(
        14, ge=1, description="days of readings needed before a learned P_load or noise is used"
    )
    hysteresis: float = Field(0.10, ge=0, lt=1, description="share of P_load")
    dwell_min: float = Field(2.0, ge=0)
    in_shift_min: float = Field(20.0, gt=0)
    outside_shift_min: float = Field(10.0, gt=0)
    report_share: float = Field(
        0.25, gt=0, lt=1, description="the daily report flags a shift idle longer than this"
    )

    @model_validator(mode="after")
    def _off_below_load(self) -> Self:
        if self.load_kw is None and self.off_share >= self.load_share:
            raise ValueError("off_share must be below load_share")
        if self.learn_days is not None and self.learn_min_days > self.learn_days:
            raise ValueError("learn_min_days must not exceed learn_days")
        return self


class Peak(_Model):
    reference_days: int = Field(4, ge=1, description="same weekdays (or, lacking them, recent peak days)")
    ratio: float = Field(1.1, gt=1)
    min_excess_share: float = Field(
        0.1,
        ge=0,
        description="and above the reference by this share of the larger of rated kW and the usual daily high",
    )
    min_intervals: int = Field(4, ge=1, description="15-min intervals: 4 = 1 hour")
    large_machine_min: float = Field(15.0, gt=0)
    demand_window_min: Literal[15, 30] = Field(
        30, description="demand interval of a configured demand limit, aligned to the clock"
    )
    demand_warn: float = Field(0.9, gt=0, description="warn when the predicted demand reaches this share")
    demand_alarm: float = Field(1.0, gt=0, description="alarm when it reaches this share of the limit")
    demand_clear: float = Field(0.85, gt=0, description="either clears below this share")

    @model_validator(mode="after")
    def _ordered_demand_shares(self) -> Self:
        if not self.demand_clear < self.demand_warn <= self.demand_alarm:
            raise ValueError("demand shares must be ordered demand_clear < demand_warn <= demand_alarm")
        return self


class Lighting(_Model):
    lit_share: float = Field(0.10, gt=0, lt=1, description="lit above this share of rated kW")
    tolerance_min: float = Field(15.0, ge=0)


class Advertising(_Model):
    max_ratio: float = Field(0.5, gt=0, le=1)
    lit_share: float = Field(0.10, gt=0, lt=1)
    min_intervals: int = Field(2, ge=1)


class DataQuality(_Model):
    silent_polls: int = Field(3, ge=1)
    frozen_polls: int = Field(5, ge=2)


class Thresholds(_Model):
    after_hours: AfterHours = AfterHours()
    idle: Idle = Idle()
    peak: Peak = Peak()
    lighting: Lighting = Lighting()
    advertising: Advertising = Advertising()
    data_quality: DataQuality = DataQuality()


class MeterConfig(_Model):
    role: Role
    rated_kw: float = Field(gt=0)
    large: bool = Field(False, description="a large machine the plant keeps out of the peak bands (R9)")
    demand_limit_kw: float | None = Field(
        None,
        gt=0,
        description="contracted or target maximum demand: warned of as the running window nears it",
    )
    thresholds: Thresholds | None = Field(None, description="overrides the site's")


class SiteConfig(_Model):
    calendar: SiteCalendar = SiteCalendar()
    tariff: Tariff = Tariff()
    thresholds: Thresholds = Thresholds()
    poll_s: float = Field(60.0, gt=0)
    meters: dict[str, MeterConfig] = Field(default_factory=dict)


class Sites(_Model):
    sites: dict[str, SiteConfig]


def load_sites(path: Path | str) -> Sites:
    """The detection settings file; ConfigError naming file, line, key and problem if unusable."""
    return yamlconfig.load(Sites, path)
