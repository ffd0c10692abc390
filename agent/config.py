"""The agent's configuration file (``agent.yaml``), validated so every error names its file, line and key.

Cross-field checks (unique meter ids, unique units on a bus, known profiles) raise errors located at the
offending key, not at the enclosing list, so ``kilowatch.yamlconfig`` can point at the right line.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from kilowatch.broker import BrokerSettings
from kilowatch.mqtt_contract import ID_PATTERN
from kilowatch.profiles import load_builtin
from kilowatch.yamlconfig import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        None, max_length=64, description="MQTT client id; none means kilowatch-<site>-<gateway>"
    )


class ClockMode(StrEnum):
    AUTO = "auto"
    """Ask the kernel whether the system clock is synchronised (NTP, chrony, an RTC driver)."""
    SYNCED = "synced"
    """Trust the clock (e.g. a GPS-disciplined gateway the kernel does not know about)."""
    UNSYNCED = "unsynced"
    """Never trust it: every reading is marked for the collector to correct or quarantine."""


class ClockSettings(_Strict):
    mode: ClockMode = Field(ClockMode.AUTO, description="How the gateway decides whether its clock is right")


class Meter(_Strict):
    """One meter on a bus."""

    id: str = Field(pattern=ID_PATTERN, description="Meter id, unique across the deployment")
    profile: str = Field(description="Device profile id or alias (see `kilowatch profiles list`)")
    unit: int = Field(ge=1, le=247, description="Modbus unit (slave) id on this bus")

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


class _BusBase(_Strict):
    """What every bus has, whatever its transport."""

    name: str = Field(pattern=ID_PATTERN, description="Bus name, used in logs and errors")
    timeout_s: float = Field(1.0, gt=0, le=30, description="Response timeout per request in seconds")
    meters: list[Meter] = Field(min_length=1, description="Meters on this bus, polled one after another")

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


class TcpBus(_BusBase):
    """Meters reached over Modbus TCP (a meter with Ethernet, or a TCP-to-RS-485 gateway in TCP mode)."""

    transport: Literal["tcp"] = Field(description="How the bus is reached")
    host: str = Field(min_length=1, description="Host name or address of the meter or gateway")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port")


Bus = TcpBus
"""A bus of any transport. Serial transports will make this ``Annotated[TcpBus | RtuBus | ...,
Field(discriminator="transport")]``; `transport` is already required so today's files stay valid."""


class AgentConfig(_Strict):
    """Everything one gateway's agent needs: who it is, where to publish, what to poll."""

    site: str = Field(pattern=ID_PATTERN, description="Site id this gateway belongs to")
    gateway: str = Field(pattern=ID_PATTERN, description="Gateway id, unique within the site")
    poll_interval_s: float = Field(
        10.0, gt=0, le=86400, description="Seconds between polls, aligned to the clock"
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="MQTT broker connection")
    clock: ClockSettings = Field(default_factory=ClockSettings, description="Clock trust")
    buses: list[Bus] = Field(min_length=1, description="Buses and the meters on them")

    @field_validator("mqtt", "clock", mode="before")
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
