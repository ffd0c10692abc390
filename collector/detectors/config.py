"""Detection settings per site and meter: role, rated kW, calendar, tariff and thresholds; and the units
the Directive 20 reports are made for, with their meter trees and saving targets.

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
from kilowatch.mqtt_contract import Ident


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

    peak: float = Field(4587.0, ge=0, description="VND per kWh in the peak band")
    normal: float = Field(2666.0, ge=0, description="VND per kWh in the normal band")
    off_peak: float = Field(1622.0, ge=0, description="VND per kWh in the off-peak band")

    def price(self, band: Band) -> float:
        return {Band.PEAK: self.peak, Band.NORMAL: self.normal, Band.OFF_PEAK: self.off_peak}[band]


class AfterHours(_Model):
    base_quantile: float = Field(
        0.10,
        gt=0,
        lt=1,
        description="B, the base load: this quantile of the unoccupied 15-min kW of the trailing days",
    )
    peak_quantile: float = Field(0.975, gt=0, lt=1, description="peak: this quantile of all of them")
    trailing_days: int = Field(28, ge=1, description="days B and peak are learned from")
    open_ratio: float = Field(1.25, gt=1, description="open above max(open_ratio*B, B + peak_share*(peak-B))")
    peak_share: float = Field(0.10, gt=0, lt=1, description="see open_ratio")
    open_intervals: int = Field(4, ge=1, description="for this many 15-min intervals (4: an hour)")
    clear_ratio: float = Field(1.1, gt=0, description="clears after clear_intervals below clear_ratio*B")
    clear_intervals: int = Field(2, ge=1, description="see clear_ratio")
    essential_kw: float | None = Field(
        None, ge=0, description="a known 24/7 base load to use as B instead; null: learned"
    )


class Idle(_Model):
    off_share: float = Field(
        0.05, gt=0, lt=1, description="P_off (below it the machine is off) as a share of rated kW"
    )
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
    load_kw: float | None = Field(
        None, gt=0, description="P_load given in kW; null: learned, else load_share"
    )
    learn_days: int | None = Field(
        28,
        ge=1,
        description="learn P_load and P_off's noise from the machine's readings of this many days before each "
        "day (null: never)",
    )
    learn_min_days: int = Field(
        14, ge=1, description="days of readings needed before a learned P_load or noise is used"
    )
    hysteresis: float = Field(0.10, ge=0, lt=1, description="between states, as a share of P_load")
    dwell_min: float = Field(2.0, ge=0, description="minutes a state must last to count")
    in_shift_min: float = Field(20.0, gt=0, description="alert after this many minutes idle in a shift")
    outside_shift_min: float = Field(10.0, gt=0, description="alert after this many minutes idle outside one")
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
    reference_days: int = Field(
        4,
        ge=1,
        description="overuse is judged against the median of this many last same weekdays (or, lacking "
        "them, recent peak days)",
    )
    ratio: float = Field(1.1, gt=1, description="overuse: above ratio x that reference")
    spread_factor: float = Field(
        6.0,
        ge=0,
        description="and, to begin in occupied hours without a switch seen, above the reference by this "
        "many times the circuit's own day-to-day spread in the band (root mean square of how far its "
        "comparable days drew above theirs)",
    )
    min_excess_share: float = Field(
        0.02,
        ge=0,
        description="and above the reference by this share of the larger of rated kW and the usual daily "
        "high: a noise floor for circuits that draw next to nothing",
    )
    min_intervals: int = Field(2, ge=1, description="for this many 15-min intervals: 2 = 30 min")
    large_machine_min: float = Field(
        15.0, gt=0, description="alert when a `large` machine is loaded this many minutes in a peak band"
    )
    demand_window_min: Literal[15, 30] = Field(
        30, description="demand interval of a meter's demand_limit_kw, minutes, aligned to the clock"
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
    tolerance_min: float = Field(15.0, ge=0, description="switching this many minutes early or late is fine")


class Advertising(_Model):
    max_ratio: float = Field(
        0.5, gt=0, le=1, description="the evening-peak mean may be at most this share of the hour before's"
    )
    lit_share: float = Field(0.10, gt=0, lt=1, description="lit above this share of rated kW")
    min_intervals: int = Field(2, ge=1, description="15-min intervals over max_ratio before an alert")


class DataQuality(_Model):
    silent_polls: int = Field(3, ge=1, description="no reading for more than this many polls: no_data")
    frozen_polls: int = Field(5, ge=2, description="this many identical readings in a row: frozen")


class Thresholds(_Model):
    after_hours: AfterHours = Field(
        AfterHours(),
        description="R4, load after hours: above max(open_ratio*B, B + peak_share*(peak-B)) while unoccupied",
    )
    idle: Idle = Field(Idle(), description="R10, a machine idling between P_off and P_load")
    peak: Peak = Field(
        Peak(), description="R9, overuse in the peak bands, large machines run in them, demand limits"
    )
    lighting: Lighting = Field(Lighting(), description="R6, street lights burning outside their window")
    advertising: Advertising = Field(
        Advertising(), description="R7, advertising lit through the evening peak"
    )
    data_quality: DataQuality = Field(DataQuality(), description="meters gone silent or frozen")
    hold_off_min: float = Field(
        30.0,
        ge=0,
        description="a rule's condition on a meter that comes back within this many minutes of clearing is "
        "the same episode, one alert (no flood of alerts from a condition that flickers); an alert resolves "
        "once its condition has stayed clear this long",
    )


class MeterConfig(_Model):
    role: Role = Field(
        description="What the meter measures, which decides the detectors that judge it",
        examples=["sub_meter"],
    )
    rated_kw: float = Field(gt=0, description="its full load, kW", examples=[60])
    gateway: Ident | None = Field(
        None,
        description="the gateway that polls it: the collector refuses its readings from any other. null: "
        "the first gateway of this site it is seen from (moved with `kilowatch collector move-meter`)",
    )
    large: bool = Field(False, description="a large machine the plant keeps out of the peak bands (R9)")
    demand_limit_kw: float | None = Field(
        None,
        gt=0,
        description="contracted or target maximum demand: warned of as the running window nears it",
    )
    thresholds: Thresholds | None = Field(
        None,
        description="replaces its site's thresholds for this meter only (the same keys); null: the site's",
        examples=[{"idle": {"load_kw": 20}}],
    )


class SiteConfig(_Model):
    calendar: SiteCalendar = Field(SiteCalendar(), description="What the site's meters are judged against")
    tariff: Tariff = Field(
        Tariff(), description="VND per kWh by time-of-use band: prices the waste (approximate; use yours)"
    )
    thresholds: Thresholds = Field(
        Thresholds(), description="The detectors' thresholds (domain rules R4-R10)"
    )
    poll_s: float = Field(60.0, gt=0, description="The agents' poll interval for these meters, seconds")
    notify_old_findings: bool = Field(
        True,
        description="Raise what the detectors find in a backlog older than detection.catch_up_days (marked "
        "raised late); false: count and log those instead of alerting",
    )
    meters: dict[str, MeterConfig] = Field(
        default_factory=dict,
        description="The meters to judge, by the meter ids the agents publish; the others are not judged",
        examples=[{"so-cong-thuong.cooling": {"role": "sub_meter", "rated_kw": 60}}],
    )


class UnitCategory(StrEnum):
    """What the provincial plan asks of a unit, by what it is."""

    PUBLIC_OFFICE = "public_office"
    PUBLIC_LIGHTING = "public_lighting"
    LARGE_USER = "large_user"
    OTHER = "other"


DEFAULT_SAVING_TARGETS: dict[UnitCategory, float | None] = {
    UnitCategory.PUBLIC_OFFICE: 0.05,
    UnitCategory.PUBLIC_LIGHTING: 0.30,
    UnitCategory.LARGE_USER: 0.02,
    UnitCategory.OTHER: None,
}
"""domain.md's yearly saving by category: R1 public offices >= 5 %, R5 public lighting >= 30 %, R8 users of
1 GWh a year or more >= 2 %; the plan sets none for the others (they count towards the province's, R2)."""

LARGE_USER_KWH = 1_000_000.0
"""R8 binds users of this many kWh a year or more."""


class UnitConfig(_Model):
    """An office, a lighting operator's district, a factory: whose use the Department follows month by month."""

    name: str = Field(
        min_length=1, description="The unit's name as the Department knows it", examples=["Sở Công Thương"]
    )
    category: UnitCategory = Field(
        description="public_office (R1), public_lighting (R5), large_user (R8, 1 GWh a year or more) or other: "
        "which saving target applies by default",
        examples=["public_office"],
    )
    meters: tuple[str, ...] = Field(
        min_length=1,
        description="The meters whose sum is the unit's use: its supply points, never a sub-meter of another",
        examples=[["so-cong-thuong.main"]],
    )
    saving_target: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Yearly saving against the year before, as a share (0.05 = 5 %); null: the category's "
        "(public_office 0.05, public_lighting 0.30, large_user 0.02, other none)",
    )
    sub_meters: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Meter trees for losses (R11): a parent meter and the sub-meters it feeds, e.g. "
        "{tu-chieu-sang.feeder: [tu-chieu-sang.cabinet-1, tu-chieu-sang.cabinet-2]}",
    )
    loss_target: float = Field(
        0.049,
        ge=0,
        lt=1,
        description="Losses ((parent - sub-meters) / parent) above this share are flagged (the plan: under "
        "4.9 % by 2025)",
    )
    calendar: SiteCalendar = Field(
        SiteCalendar(),
        description="Its working days, for kWh per working day: occupancy.days, public_holidays, closed_days "
        "and working_days (make-up days) count; the rest of the calendar is not used by the reports",
    )
    manager_email: tuple[str, ...] = Field(
        (),
        description="Who gets the monthly report workbook by e-mail (notify.email in collector.yaml sends "
        "it); empty: nobody",
    )

    @property
    def target(self) -> float | None:
        """The saving target in force: the configured one, else the category's."""
        return self.saving_target if self.saving_target is not None else DEFAULT_SAVING_TARGETS[self.category]


class Reporting(_Model):
    """What the Directive 20 reports need beyond the units."""

    province: str = Field("Lạng Sơn", description="Whose plan the reports answer to, for their headings")
    province_target: float = Field(
        0.02, ge=0, lt=1, description="The province's yearly saving across all units (R2: 2 %)"
    )
    min_completeness: float = Field(
        0.9,
        gt=0,
        le=1,
        description="A period with less of its 15-minute intervals than this share is not compared",
    )
    temperature_file: Path | None = Field(
        None,
        description="CSV of daily mean outdoor temperature (columns `date`, `temperature_c`; Vietnam dates): "
        "with it, a weather-normalised saving is given where a monthly model passes ASHRAE Guideline 14. "
        "Relative to the working folder; null: raw savings only",
    )


class Sites(_Model):
    sites: dict[str, SiteConfig] = Field(
        description="One entry per site id: the meters to judge, with their role and rated power, and "
        "whatever of the site's calendar, tariff and thresholds differs from the defaults",
        examples=[
            {
                "so-cong-thuong": {
                    "meters": {
                        "so-cong-thuong.main": {
                            "role": "office_main",
                            "rated_kw": 15,
                            "demand_limit_kw": 120,
                        },
                        "so-cong-thuong.cooling": {"role": "sub_meter", "rated_kw": 60},
                        "so-cong-thuong.lights": {"role": "sub_meter", "rated_kw": 25},
                    }
                },
                "nha-may-co-khi": {
                    "calendar": {
                        "occupancy": {
                            "days": [0, 1, 2, 3, 4, 5],
                            "windows": [
                                {"start": "06:00", "end": "14:00"},
                                {"start": "14:00", "end": "22:00"},
                            ],
                        }
                    },
                    "meters": {
                        "nha-may-co-khi.press": {"role": "machine", "rated_kw": 150, "large": True},
                        "nha-may-co-khi.compressor": {
                            "role": "machine",
                            "rated_kw": 37,
                            "thresholds": {"idle": {"load_kw": 20}},
                        },
                    },
                },
                "tu-chieu-sang-01": {
                    "calendar": {
                        "coordinates": {"lat": 21.853, "lon": 106.761},
                        "lighting": {"mode": "astronomical"},
                    },
                    "meters": {"tu-chieu-sang-01.cabinet": {"role": "lighting_cabinet", "rated_kw": 7.5}},
                },
            }
        ],
    )
    units: dict[str, UnitConfig] = Field(
        default_factory=dict,
        description="The units of the Directive 20 reports (monthly use against last year, yearly savings, "
        "losses), by an id of your choosing",
        examples=[
            {
                "so-cong-thuong": {
                    "name": "Sở Công Thương",
                    "category": "public_office",
                    "meters": ["so-cong-thuong.main"],
                    "manager_email": ["van.phong@socongthuong.langson.gov.vn"],
                },
                "chieu-sang-tp": {
                    "name": "Chiếu sáng công cộng TP Lạng Sơn",
                    "category": "public_lighting",
                    "meters": ["tu-chieu-sang-01.feeder"],
                    "sub_meters": {
                        "tu-chieu-sang-01.feeder": ["tu-chieu-sang-01.cabinet", "tu-chieu-sang-01.cabinet-2"]
                    },
                    "calendar": {"occupancy": {"days": [0, 1, 2, 3, 4, 5, 6]}, "public_holidays": False},
                },
                "nha-may-co-khi": {
                    "name": "Nhà máy cơ khí",
                    "category": "large_user",
                    "meters": ["nha-may-co-khi.press", "nha-may-co-khi.compressor"],
                    "saving_target": 0.03,
                },
            }
        ],
    )
    reporting: Reporting = Field(Reporting(), description="Province-wide settings of those reports")

    @model_validator(mode="after")
    def _meters_in_one_unit(self) -> Self:
        owner: dict[str, str] = {}
        for unit_id, unit in self.units.items():
            for meter in unit.meters:
                if meter in owner:
                    raise ValueError(f"meter {meter!r} belongs to units {owner[meter]!r} and {unit_id!r}")
                owner[meter] = unit_id
        return self


def load_sites(path: Path | str) -> Sites:
    """The detection settings file; ConfigError naming file, line, key and problem if unusable."""
    return yamlconfig.load(Sites, path)
