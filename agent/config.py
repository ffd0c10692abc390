"""The agent's configuration file (``agent.yaml``), validated so every error names its file, line and key.

Cross-field checks (unique meter ids, unique units on a bus, known profiles) raise errors located at the
offending key, not at the enclosing list, so ``kilowatch.yamlconfig`` can point at the right line.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.bus_time import SerialLine
from kilowatch.broker import BrokerSettings
from kilowatch.mqtt_contract import ID_PATTERN
from kilowatch.profiles import Profile, Ratios, load_builtin
from kilowatch.yamlconfig import ConfigError

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    # defer_build: a validator is built on first use, so a process holds only those it uses (the running
    # agent about half of the models it imports: about 1 MB less on a gateway)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _duplicate(loc: tuple[str | int, ...], value: Any, first: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("duplicate", "already used by {first}", {"first": first}),
        loc=loc,
        input=value,
    )


def _raise_if_any(title: str, errors: list[InitErrorDetails]) -> None:
    """Raise errors whose locations are below the validated model, so they keep their own line numbers."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)


class MqttSettings(BrokerSettings):
    """Where and how the agent publishes."""

    client_id: str | None = Field(
        None, max_length=64, description="MQTT client id; null means kilowatch-<site>-<gateway>"
    )
    reconnect_max_s: float = Field(
        8.0,
        gt=0,
        description="Longest wait between reconnection attempts: after three quick retries the wait "
        "doubles up to this, with jitter, so the agent is back on average within half of it once the "
        "broker returns, and many gateways arrive spread over it",
    )


class ClockMode(StrEnum):
    AUTO = "auto"
    """Ask the kernel whether the system clock is synchronised (NTP, chrony, an RTC driver)."""
    SYNCED = "synced"
    """Trust the clock (e.g. a GPS-disciplined gateway the kernel does not know about)."""
    UNSYNCED = "unsynced"
    """Never trust it: every reading is marked for the collector to correct or quarantine."""
    FLAG_FILE = "flag-file"
    """Synchronised while `flag_file` exists: systemd-timesyncd creates its file at the first sync, for
    set-ups where the kernel's flag is not kept (e.g. containers)."""


class ClockSettings(_Strict):
    mode: ClockMode = Field(
        ClockMode.AUTO,
        description="How the gateway decides whether its clock is right. auto: ask the kernel whether NTP "
        "(chrony, an RTC driver) has synchronised it; flag-file: synchronised while flag_file exists "
        "(systemd-timesyncd creates the default one at the first sync; for containers); synced / unsynced: "
        "force it (e.g. a GPS-disciplined clock the kernel does not know about). Readings stamped before "
        "synchronisation are marked, and re-dated from the monotonic clock once it comes",
    )
    flag_file: Path = Field(
        Path("/run/systemd/timesync/synchronized"),
        description="mode flag-file: the file whose existence means the clock is synchronised",
    )


class MetricsSettings(_Strict):
    """The optional Prometheus endpoint with each meter's health (``GET /metrics``)."""

    enabled: bool = Field(False, description="Serve the endpoint")
    host: str = Field(
        "127.0.0.1", min_length=1, description="Address to listen on; 0.0.0.0 exposes it to the network"
    )
    port: int = Field(9108, ge=1, le=65535, description="TCP port to listen on")


class SpoolSettings(_Strict):
    """The on-disk spool that keeps every batch from poll to broker acknowledgement (see agent.spool)."""

    path: Path = Field(
        Path("kilowatch-spool.db"),
        description="SQLite file; a relative path is from the config file's folder (on a gateway: "
        "/var/lib/kilowatch/spool.db); never shared by two agents",
    )
    max_bytes: int = Field(
        256 * 2**20,
        ge=64 * 2**10,
        description="Size bound in bytes (default 256 MiB): over it the oldest batches are evicted, and the "
        "eviction is reported",
    )
    max_age_s: float = Field(
        30 * 86400.0, gt=0, description="Age bound in seconds (default 30 days): older batches are evicted"
    )
    commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="Seconds between commits (each one syncs the disk; SD cards wear)"
    )
    max_inflight: int = Field(
        16,
        ge=1,
        le=1000,
        description="Batches published at once awaiting their PUBACK (a backlog drains faster)",
    )


class Timing(_Strict):
    """How patiently one meter is asked: one value object, set per bus and overridden per meter.

    A key left out (null) inherits: meter, then bus, then the profile's ``connection.timeout_s`` (for
    the timeout), then the built-in default (:data:`BUILT_IN_TIMING`). A pause of 0 disables it, which
    is distinct from inheriting one.
    """

    timeout_s: float | None = Field(
        None, gt=0, le=30, description="Response timeout per request in seconds; null: inherit"
    )
    retries: int | None = Field(
        None, ge=0, le=5, description="Extra attempts after a timeout or a garbled answer; null: inherit"
    )
    pause_after_connect_s: float | None = Field(
        None, ge=0, le=60, description="Wait after opening the port or connection; 0: none; null: inherit"
    )
    pause_between_requests_s: float | None = Field(
        None, ge=0, le=10, description="Bus silence before each request to this meter; 0: none; null: inherit"
    )


@dataclass(frozen=True, kw_only=True)
class EffectiveTiming:
    """A :class:`Timing` with everything inherited filled in."""

    timeout_s: float
    retries: int
    pause_after_connect_s: float
    pause_between_requests_s: float


BUILT_IN_TIMING = EffectiveTiming(
    timeout_s=1.0, retries=1, pause_after_connect_s=0.0, pause_between_requests_s=0.0
)


def effective_timing(meter: Timing, bus: Timing, profile: Profile) -> EffectiveTiming:
    """Meter over bus over profile over built-in, key by key."""
    base = replace(BUILT_IN_TIMING, timeout_s=profile.connection.timeout_s)
    chosen = {
        name: next((v for v in (getattr(meter, name), getattr(bus, name)) if v is not None), default)
        for name, default in asdict(base).items()
    }
    return EffectiveTiming(**chosen)


QUANTITIES = (
    "The quantities to read (names as in `kilowatch profiles show`), all of the profile's by default; a "
    "meter's list replaces its bus's. Fewer quantities, fewer registers: the read plan shrinks, and so do "
    "the bus time, the CPU and the messages (`kilowatch agent plan` shows it)"
)
"""The description the meter's and the bus's `quantities` share."""


def select(profile: Profile, quantities: list[str] | None) -> Profile:
    """`profile` reduced to `quantities` (None: all) and the parameters they need, for planning and
    decoding (its id unchanged: readings still name the profile)."""
    if quantities is None:
        return profile
    wanted = set(quantities)
    registers = [reg for reg in profile.registers if reg.quantity in wanted]
    held = profile.ratio_registers
    needed = {reg.scale_factor for reg in registers} | {
        name
        for name, flag in ((held.ct, "ct_scaled"), (held.vt, "vt_scaled"))
        if any(getattr(reg, flag) for reg in registers)
    }
    parameters = [p for p in profile.parameters if p.name in needed]
    return profile.model_copy(update={"registers": registers, "parameters": parameters})


class Meter(_Strict):
    """One meter on a bus."""

    id: str = Field(
        pattern=ID_PATTERN, description="Meter id, unique across the deployment", examples=["main-incomer"]
    )
    profile: str = Field(
        description="Device profile id or alias (see `kilowatch profiles list`)", examples=["eastron-sdm630"]
    )
    unit: int = Field(ge=1, le=247, description="Modbus unit (slave) id, unique on this bus", examples=[1])
    timing: Timing = Field(
        default_factory=Timing,
        description="Overrides the bus's timing for this meter, key by key (e.g. a slow meter: timeout_s: 2)",
    )
    ct_ratio: float = Field(
        1.0,
        gt=0,
        description="Current transformer ratio (primary / secondary, 100/5 A: 20) for a meter that reports "
        "secondary values; applies to the registers its profile marks ct_scaled",
    )
    vt_ratio: float = Field(
        1.0, gt=0, description="Voltage transformer ratio, likewise for registers marked vt_scaled"
    )
    quantities: list[str] | None = Field(
        None,
        min_length=1,
        description=QUANTITIES,
        examples=[["voltage_l1_v", "current_l1_a", "active_power_w", "energy_import_kwh"]],
    )

    @property
    def ratios(self) -> Ratios:
        """The transformer ratios the profile's decoding applies."""
        return Ratios(ct=self.ct_ratio, vt=self.vt_ratio)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        try:
            load_builtin(name)
        except KeyError as exc:
            raise PydanticCustomError("unknown_profile", str(exc.args[0])) from None
        except ConfigError as exc:
            raise PydanticCustomError("broken_profile", "; ".join(exc.problems)) from None
        return name

    @field_validator("timing", mode="before")
    @classmethod
    def _empty_timing(cls, value: Any) -> Any:
        return {} if value is None else value


class _BusBase(_Strict):
    """What every bus has, whatever its transport."""

    name: str = Field(
        pattern=ID_PATTERN, description="Bus name, used in logs and errors", examples=["main-panel"]
    )
    timing: Timing = Field(
        default_factory=Timing,
        description="How patiently every meter on this bus is asked. A key left null inherits, in this "
        "order: the meter's, the bus's, the profile's connection.timeout_s (timeout only), the built-in "
        "(1 s, 1 retry, no pauses)",
    )
    meters: list[Meter] = Field(
        min_length=1,
        description="Meters on this bus, polled one request at a time. A meter that stops answering is "
        "probed now and then, in the time the others leave in each cycle",
        examples=[[{"id": "main-incomer", "profile": "eastron-sdm630", "unit": 1}]],
    )
    quantities: list[str] | None = Field(None, min_length=1, description=QUANTITIES)

    @model_validator(mode="before")
    @classmethod
    def _renamed_timeout(cls, data: Any) -> Any:
        """``timeout_s`` on a bus (issue-2 configs) keeps working as ``timing.timeout_s``."""
        if isinstance(data, dict) and "timeout_s" in data:
            data = dict(data)
            timeout = data.pop("timeout_s")
            timing = dict(data.get("timing") or {})
            timing.setdefault("timeout_s", timeout)
            data["timing"] = timing
            log.warning("bus %s: timeout_s is deprecated; write timing: {timeout_s: ...}", data.get("name"))
        return data

    @field_validator("timing", mode="before")
    @classmethod
    def _empty_timing(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _units_unique(self) -> Self:
        first: dict[int, int] = {}
        errors = []
        for i, meter in enumerate(self.meters):
            if meter.unit in first:
                errors.append(_duplicate(("meters", i, "unit"), meter.unit, f"meters[{first[meter.unit]}]"))
            first.setdefault(meter.unit, i)
        _raise_if_any("Bus", errors)
        return self

    @model_validator(mode="after")
    def _quantities_known(self) -> Self:
        """Every selected quantity is one the meter's profile maps (checked where the list is written)."""
        errors = []
        for i, meter in enumerate(self.meters):
            where: tuple[str | int, ...] = (
                ("meters", i, "quantities") if meter.quantities else ("quantities",)
            )
            mapped = {reg.quantity for reg in load_builtin(meter.profile).registers}
            for j, name in enumerate(meter.quantities or self.quantities or []):
                if name not in mapped:
                    errors.append(
                        InitErrorDetails(
                            type=PydanticCustomError(
                                "unmapped_quantity",
                                "{name} is not a quantity of profile {profile}",
                                {"name": name, "profile": meter.profile},
                            ),
                            loc=(*where, j),
                            input=name,
                        )
                    )
        _raise_if_any("Bus", errors)
        return self

    def timing_of(self, meter: Meter) -> EffectiveTiming:
        return effective_timing(meter.timing, self.timing, load_builtin(meter.profile))

    def profile_of(self, meter: Meter) -> Profile:
        """The meter's profile reduced to the quantities it is read for."""
        return select(load_builtin(meter.profile), meter.quantities or self.quantities)


TRANSPORT = (
    "How the bus is reached: tcp (Modbus TCP: a meter with Ethernet or a TCP-to-RS-485 gateway), rtu "
    "(Modbus RTU on a serial port of this gateway) or rtu-over-tcp (RTU frames through a serial server's "
    "TCP port, transparent mode)"
)
"""The description every bus's `transport` shares (the key that tells the kinds of bus apart)."""


class TcpBus(_BusBase):
    """Meters reached over Modbus TCP (a meter with Ethernet, or a TCP-to-RS-485 gateway in TCP mode)."""

    transport: Literal["tcp"] = Field(description=TRANSPORT, examples=["tcp"])
    host: str = Field(
        min_length=1, description="Host name or address of the meter or gateway", examples=["192.168.1.50"]
    )
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port")


LINE_KEYS = ("baud", "parity", "stopbits", "bytesize")
"""The character format of a serial line, as the profile's `connection` names it."""


class _SerialLineBus(_BusBase):
    """A bus that is an RS-485 line somewhere: its character format comes from the config, else from
    the meters' profiles (which must then agree), else from the built-in 9600 8N1."""

    configurable: ClassVar[tuple[str, ...]] = ("baud",)
    """The line keys this kind of bus lets the config set."""

    baud: int | None = Field(
        None,
        gt=0,
        le=4_000_000,
        description="Line speed, e.g. 9600 or 19200; null: the meters' profile default (they must then "
        "agree). Over TCP only feeds the bus-time estimates of `kilowatch agent plan`",
    )

    @model_validator(mode="after")
    def _profiles_agree(self) -> Self:
        errors = []
        for key in self.configurable:
            if getattr(self, key) is not None:
                continue
            first: tuple[int, Any] | None = None
            for i, meter in enumerate(self.meters):
                value = getattr(load_builtin(meter.profile).connection, key)
                if first is None:
                    first = (i, value)
                elif value != first[1]:
                    errors.append(
                        InitErrorDetails(
                            type=PydanticCustomError(
                                "line_mismatch",
                                "its profile's {key} {value} differs from meters[{i}]'s {other}; "
                                "set {key} on the bus",
                                {"key": key, "value": value, "i": first[0], "other": first[1]},
                            ),
                            loc=("meters", i, "profile"),
                            input=meter.profile,
                        )
                    )
                    break
        _raise_if_any("Bus", errors)
        return self

    @property
    def line(self) -> SerialLine:
        """The character format on the wire: config over the meters' profile over built-in."""
        profile = load_builtin(self.meters[0].profile).connection
        chosen = {key: getattr(self, key) if key in self.configurable else None for key in LINE_KEYS}
        return SerialLine(**{k: getattr(profile, k) if v is None else v for k, v in chosen.items()})


class RtuBus(_SerialLineBus):
    """An RS-485 line on a serial port of the gateway (a USB adapter, a HAT)."""

    configurable: ClassVar[tuple[str, ...]] = LINE_KEYS

    transport: Literal["rtu"] = Field(description=TRANSPORT, examples=["rtu"])
    port: str = Field(min_length=1, description="Serial device", examples=["/dev/ttyUSB0"])
    parity: Literal["N", "E", "O"] | None = Field(None, description="N, E or O; null: the profiles'")
    stopbits: Literal[1, 2] | None = Field(None, description="1 or 2; null: the profiles'")
    bytesize: Literal[7, 8] | None = Field(None, description="7 or 8; null: the profiles'")


class RtuOverTcpBus(_SerialLineBus):
    """An RS-485 line behind a serial server that forwards raw RTU frames over TCP (transparent mode).

    Its serial side is configured on the converter; ``baud`` here only feeds bus-time estimates.
    """

    transport: Literal["rtu-over-tcp"] = Field(description=TRANSPORT, examples=["rtu-over-tcp"])
    host: str = Field(
        min_length=1, description="Host name or address of the serial server", examples=["192.168.1.60"]
    )
    port: int = Field(
        ge=1, le=65535, description="The serial server's TCP port for this line", examples=[4001]
    )


Bus = Annotated[TcpBus | RtuBus | RtuOverTcpBus, Field(discriminator="transport")]
"""A bus of any transport, told apart by its `transport` key."""


class AgentConfig(_Strict):
    """Everything one gateway's agent needs: who it is, where to publish, what to poll."""

    site: str = Field(
        pattern=ID_PATTERN,
        description="Site id this gateway belongs to; with the gateway id it names the MQTT topics "
        "(kilowatch/v1/<site>/<gateway>/...)",
        examples=["hanoi-office"],
    )
    gateway: str = Field(
        pattern=ID_PATTERN, description="Gateway id, unique within the site", examples=["gw-01"]
    )
    poll_interval_s: float = Field(
        10.0,
        gt=0,
        le=86400,
        description="Seconds between polls, aligned to the clock: with 10, polls start at :00, :10, :20, ...",
    )
    health_interval_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="Seconds between republishing the online status with each meter's health; 0: never",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="MQTT broker connection")
    clock: ClockSettings = Field(
        default_factory=ClockSettings, description="Whether readings may trust the gateway's clock"
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings,
        description="Prometheus endpoint (GET /metrics) with each meter's health: polls, failures by kind, "
        "last good time, latency, breaker state",
    )
    spool: SpoolSettings = Field(
        default_factory=SpoolSettings,
        description="The on-disk spool (SQLite) keeps every batch from poll to broker acknowledgement: a "
        "crash, a power cut or a week without network loses nothing. Over a bound the oldest batches are "
        "evicted (and reported)",
    )
    buses: list[Bus] = Field(
        min_length=1,
        description="Buses and the meters on them. Buses are polled concurrently, each on its own cycle",
        examples=[
            [
                {
                    "name": "main-panel",
                    "transport": "tcp",
                    "host": "192.168.1.50",
                    "meters": [
                        {"id": "main-incomer", "profile": "eastron-sdm630", "unit": 1},
                        {"id": "floor-2-hvac", "profile": "sdm630", "unit": 2},
                    ],
                },
                {
                    "name": "basement-rs485",
                    "transport": "rtu",
                    "port": "/dev/ttyUSB0",
                    "meters": [
                        {"id": "pump-room", "profile": "sdm630", "unit": 1},
                        {"id": "chiller", "profile": "sdm630", "unit": 2, "timing": {"timeout_s": 2}},
                    ],
                },
                {
                    "name": "roof-converter",
                    "transport": "rtu-over-tcp",
                    "host": "192.168.1.60",
                    "port": 4001,
                    "meters": [{"id": "pv-inverter-meter", "profile": "sdm630", "unit": 1}],
                },
            ]
        ],
    )

    @field_validator("mqtt", "clock", "metrics", "spool", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        """A section whose keys are all commented out parses as null: it means all defaults."""
        return {} if value is None else value

    @model_validator(mode="after")
    def _names_unique(self) -> Self:
        first: dict[str, str] = {}
        first_bus: dict[str, int] = {}
        errors = []
        for b, bus in enumerate(self.buses):
            if bus.name in first_bus:
                errors.append(_duplicate(("buses", b, "name"), bus.name, f"buses[{first_bus[bus.name]}]"))
            first_bus.setdefault(bus.name, b)
            for m, meter in enumerate(bus.meters):
                here = f"buses[{b}].meters[{m}]"
                if meter.id in first:
                    errors.append(_duplicate(("buses", b, "meters", m, "id"), meter.id, first[meter.id]))
                first.setdefault(meter.id, here)
        _raise_if_any("AgentConfig", errors)
        return self

    @property
    def meter_ids(self) -> list[str]:
        return [meter.id for bus in self.buses for meter in bus.meters]

    def relative_to(self, folder: Path) -> AgentConfig:
        """This config with a relative spool path taken from `folder` (the config file's), so an agent
        finds its spool wherever it is started from (systemd starts it in /) and two agents with their
        own config folders never share one."""
        if self.spool.path.is_absolute():
            return self
        return self.model_copy(
            update={"spool": self.spool.model_copy(update={"path": folder / self.spool.path})}
        )
