"""Scenario files: sites with their gateways, buses and meters, the anomalies to inject, and a seed.

Validated with pydantic through :mod:`kilowatch.yamlconfig`, so a bad file is refused with its name, the
line and the key: ``bad.yaml:12 sites[0].gateways[0].buses[0].meters[1].rated_kw: ...``.

Meter ids in the dataset are ``<site>.<meter>``, unique across a deployment. A site with ``count: N`` is
repeated N times as ``<id>-01`` .. ``<id>-NN``, so a province of 200 meters stays a readable file.
"""

from __future__ import annotations

from datetime import date, time
from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kilowatch import yamlconfig
from kilowatch.calendars import OFFICE_HOURS, is_public_holiday
from kilowatch.mqtt_contract import Ident
from kilowatch.profiles import MAX_UNIT, builtin_ids, load_builtin
from sim.anomalies import BLIP_MAX_S, GATEWAY_FAULTS, LOAD_EFFECTS, AnomalyKind
from sim.loads.street_lighting import SwitchMode

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

Model = Literal["office", "lighting_cabinet", "advertising", "machine", "feeder"]
Part = Literal["base", "lights", "cooling"]


def hours(t: time) -> float:
    return t.hour + t.minute / 60 + t.second / 3600


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Window(_Spec):
    """A stretch of one local day."""

    start: time = Field(alias="from")
    end: time = Field(alias="to")

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"the window ends ({self.end}) before it starts ({self.start})")
        return self


class Coordinates(_Spec):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


def _office_hours() -> tuple[Window, Window]:
    morning, afternoon = (Window.model_validate({"from": w.start, "to": w.end}) for w in OFFICE_HOURS.windows)
    return morning, afternoon


_OFFICE_HOURS = _office_hours()
"""Vietnamese public offices' hours (:data:`kilowatch.calendars.OFFICE_HOURS`)."""


class OfficeSpec(_Spec):
    hours: tuple[Window, Window] = _OFFICE_HOURS
    saturday_work: float = Field(0.15, ge=0, le=1)
    overtime: float = Field(0.2, ge=0, le=1)
    holidays_worked: list[date] = Field(
        default_factory=list,
        description="public holidays whose morning the site works with permission; its calendar declares "
        "them as working days",
    )

    @model_validator(mode="after")
    def _morning_before_afternoon(self) -> Self:
        if self.hours[1].start < self.hours[0].end:
            raise ValueError("the afternoon window starts before the morning one ends")
        return self

    @field_validator("holidays_worked")
    @classmethod
    def _public_holidays(cls, days: list[date]) -> list[date]:
        if others := [d.isoformat() for d in days if not is_public_holiday(d)]:
            raise ValueError(f"not Vietnamese public holidays: {', '.join(others)}")
        return days


class DimStep(_Spec):
    at: time
    level: float = Field(gt=0, le=1)


class LightingSpec(_Spec):
    """Switched on in the evening at `on_at` and off the next morning at `off_at` (or by the sun).
    (Not `on`/`off`: YAML reads those words as booleans.)"""

    mode: SwitchMode = SwitchMode.FIXED
    on_at: time = time(19)
    off_at: time = time(4, 30)
    dimming: list[DimStep] = Field(
        default_factory=lambda: [DimStep(at=time(23), level=0.7), DimStep(at=time(1), level=0.5)]
    )

    @model_validator(mode="after")
    def _a_night(self) -> Self:
        if not time(12) <= self.on_at or not self.off_at < time(12):
            raise ValueError("lights switch on after noon and off the next morning, before noon")
        return self


class AdvertisingSpec(_Spec):
    on_at: time = time(18)
    off_at: time = time(23)
    complies: bool = True
    cut_to: float = Field(0.45, ge=0, le=0.5, description="share of power left in the peak band")


class ShiftsSpec(_Spec):
    shifts: list[Window] = Field(
        default_factory=lambda: [
            Window.model_validate({"from": "06:00", "to": "14:00"}),
            Window.model_validate({"from": "14:00", "to": "22:00"}),
        ],
        min_length=1,
    )
    saturday: bool = True


class Schedule(_Spec):
    """Each model of meter on the site follows its own part; absent parts take the defaults."""

    office: OfficeSpec = OfficeSpec()
    lighting: LightingSpec = LightingSpec()
    advertising: AdvertisingSpec = AdvertisingSpec()
    shifts: ShiftsSpec = ShiftsSpec()


class Resolution(_Spec):
    """The smallest step a meter's registers show (a real meter's, not the float the model computes)."""

    power_w: float = Field(gt=0, description="step of the power registers, W (1: whole watts)")
    energy_kwh: float = Field(gt=0, description="step of the energy counters, kWh (0.001: three decimals)")


class MeterSpec(_Spec):
    id: Ident
    profile: str

    unit: int = Field(ge=1, le=MAX_UNIT)
    model: Model
    role: Literal["main", "sub"] = "sub"
    rated_kw: float = Field(gt=0)
    parts: tuple[Part, ...] = Field(("base", "lights", "cooling"), min_length=1, description="office only")
    large: bool = Field(False, description="machine only: the plant keeps it out of the peak bands")
    losses: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="main only: it reads (own circuits + sub-meters) x (1 + losses), the cable losses between",
    )

    resolution: Resolution | None = Field(
        None, description="what the meter shows is rounded to these steps; none: the model's own precision"
    )

    @model_validator(mode="after")
    def _feeder_is_main(self) -> Self:
        if self.model == "feeder" and self.role != "main":
            raise ValueError("a feeder (no circuit of its own, only its sub-meters) must have role main")
        return self

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        try:
            return load_builtin(value).id
        except KeyError:
            raise ValueError(f"unknown profile {value!r}; shipped: {', '.join(builtin_ids())}") from None


class BusSpec(_Spec):
    id: Ident
    transport: Literal["tcp", "rtu"] = "rtu"
    meters: list[MeterSpec] = Field(min_length=1)

    @field_validator("meters")
    @classmethod
    def _units_distinct(cls, meters: list[MeterSpec]) -> list[MeterSpec]:
        seen: dict[int, str] = {}
        for meter in meters:
            if meter.unit in seen:
                raise ValueError(f"meters {seen[meter.unit]!r} and {meter.id!r} share unit {meter.unit}")
            seen[meter.unit] = meter.id
        return meters


class GatewaySpec(_Spec):
    id: Ident
    buses: list[BusSpec] = Field(min_length=1)


class Outage(_Spec):
    """Whole local days on which no meter of the site answers (a gateway away for a month)."""

    first: date
    last: date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.last < self.first:
            raise ValueError(f"the outage ends ({self.last}) before it begins ({self.first})")
        return self


class SiteSpec(_Spec):
    id: Ident
    kind: Literal["office", "street_lighting", "advertising", "factory"]
    coordinates: Coordinates = Coordinates(lat=21.85, lon=106.76)  # Lạng Sơn
    schedule: Schedule = Schedule()
    count: int = Field(1, ge=1, le=999, description="repeat the site as <id>-01, <id>-02, ...")
    gateways: list[GatewaySpec] = Field(min_length=1)
    yearly_change: float = Field(
        0.0,
        gt=-1,
        le=1,
        description="every meter's load changes by this share a year, compounded from the scenario's start "
        "(-0.05: 5 % less than on the same day a year before)",
    )
    outages: list[Outage] = Field(default_factory=list, description="days on which the site sends nothing")

    @model_validator(mode="after")
    def _one_main(self) -> Self:
        mains = [m.id for g in self.gateways for b in g.buses for m in b.meters if m.role == "main"]
        if len(mains) > 1:
            raise ValueError(f"a site has at most one main meter, got {mains}")
        return self


class AnomalySpec(_Spec):
    """An anomaly on a meter (``<site>.<meter>``) or a gateway (``<site>/<gateway>``, clock_jump), on day
    `day` of the run (0 = the start date); with `count` and no target, placed on that many eligible
    meters on random days instead."""

    kind: AnomalyKind
    meter: str | None = None
    gateway: str | None = None
    count: int | None = Field(None, ge=1)
    sites: tuple[str, ...] = Field(
        (), description="with count: only on meters of these sites (ids as the scenario writes them)"
    )
    day: int = Field(0, ge=0)
    window: Window
    magnitude_kw: float | None = Field(None, gt=0, description="extra power of load anomalies that add it")
    seconds: float | None = Field(None, description="slow: answer delay; clock_jump: how far the clock jumps")
    code: int | None = Field(None, ge=1, le=255, description="exception: the Modbus exception code")

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        targets = [n for n in ("meter", "gateway", "count") if getattr(self, n) is not None]
        if len(targets) != 1:
            raise ValueError("give exactly one of meter, gateway or count")
        if self.sites and self.count is None:
            raise ValueError("sites narrows where count places an anomaly: give count with it")
        wants_gateway = self.kind in GATEWAY_FAULTS
        if (self.gateway is not None) != wants_gateway and (self.count is None or wants_gateway):
            raise ValueError(f"{self.kind.value} targets a {'gateway' if wants_gateway else 'meter'}")
        adds_power = self.kind in LOAD_EFFECTS and LOAD_EFFECTS[self.kind].mode is None
        if adds_power != (self.magnitude_kw is not None):
            raise ValueError(f"{self.kind.value} {'needs' if adds_power else 'takes no'} magnitude_kw")
        wants_seconds = self.kind in (AnomalyKind.SLOW, AnomalyKind.CLOCK_JUMP)
        if wants_seconds != (self.seconds is not None):
            raise ValueError(f"{self.kind.value} {'needs' if wants_seconds else 'takes no'} seconds")
        if (self.kind is AnomalyKind.EXCEPTION) != (self.code is not None):
            raise ValueError(f"{self.kind.value} {'needs' if self.code is None else 'takes no'} code")
        if self.kind is AnomalyKind.BLIP:
            length = hours(self.window.end) - hours(self.window.start)
            if length * 3600 > BLIP_MAX_S:
                raise ValueError(f"a blip lasts at most {BLIP_MAX_S // 60} min, this one {length * 60:.0f}")
        return self


class ExpandedMeter(BaseModel):
    """One meter of the deployment, with where it hangs: a repeated site is expanded here."""

    model_config = ConfigDict(frozen=True)

    id: str
    site: SiteSpec
    site_id: str
    gateway: str
    bus: str
    transport: Literal["tcp", "rtu"]
    spec: MeterSpec


class Scenario(_Spec):
    name: Ident
    description: str = ""
    seed: int = 1
    start: date = Field(description="the first local day a dataset covers unless --start says otherwise")
    sites: list[SiteSpec] = Field(min_length=1)
    anomalies: list[AnomalySpec] = Field(default_factory=list)

    @cached_property
    def meters(self) -> list[ExpandedMeter]:
        out: list[ExpandedMeter] = []
        for site in self.sites:
            ids = [site.id] if site.count == 1 else [f"{site.id}-{n:02d}" for n in range(1, site.count + 1)]
            for site_id in ids:
                for gateway in site.gateways:
                    for bus in gateway.buses:
                        out.extend(
                            ExpandedMeter(
                                id=f"{site_id}.{m.id}",
                                site=site,
                                site_id=site_id,
                                gateway=gateway.id,
                                bus=bus.id,
                                transport=bus.transport,
                                spec=m,
                            )
                            for m in bus.meters
                        )
        return out

    @model_validator(mode="after")
    def _references(self) -> Self:
        """Ids are unique and every anomaly names a meter or gateway that exists and suits it."""
        problems = []
        site_ids = [s.id for s in self.sites]
        if len(set(site_ids)) != len(site_ids):
            problems.append(f"sites: ids must be unique, got {site_ids}")
        by_id: dict[str, ExpandedMeter] = {}
        for meter in self.meters:
            if meter.id in by_id:
                problems.append(f"sites: meter id {meter.id!r} appears twice")
            by_id[meter.id] = meter
        gateways = {f"{m.site_id}/{m.gateway}" for m in self.meters}
        for i, anomaly in enumerate(self.anomalies):
            effect = LOAD_EFFECTS.get(anomaly.kind)
            if anomaly.meter is not None:
                found = by_id.get(anomaly.meter)
                if found is None:
                    problems.append(
                        f"anomalies[{i}].meter: no meter {anomaly.meter!r} (ids are <site>.<meter>)"
                    )
                elif effect is not None and effect.models and found.spec.model not in effect.models:
                    problems.append(
                        f"anomalies[{i}].kind: {anomaly.kind.value} does not apply to a {found.spec.model} "
                        f"meter ({anomaly.meter}); it applies to {', '.join(sorted(effect.models))}"
                    )
            if unknown := [s for s in anomaly.sites if s not in site_ids]:
                problems.append(f"anomalies[{i}].sites: no site {', '.join(map(repr, unknown))}")
            if anomaly.gateway is not None and anomaly.gateway not in gateways:
                problems.append(f"anomalies[{i}].gateway: no gateway {anomaly.gateway!r} (<site>/<gateway>)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def load_scenario(path: Path | str) -> Scenario:
    """A scenario file, or a shipped scenario by name (``office-lang-son``); ConfigError if unusable."""
    candidate = Path(path)
    if not candidate.exists() and (SCENARIO_DIR / f"{path}.yaml").is_file():
        candidate = SCENARIO_DIR / f"{path}.yaml"
    return yamlconfig.load(Scenario, candidate)
