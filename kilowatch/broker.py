"""How agent and collector reach the MQTT broker: one settings model and one client factory.

aiomqtt is imported inside :meth:`BrokerSettings.client`, so the base install (contracts and CLI) does not
need it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from kilowatch.mqtt_contract import TOPIC_ROOT

if TYPE_CHECKING:
    import aiomqtt


class MqttProtocol(StrEnum):
    V5 = "5"
    """MQTT 5: the default (session expiry, reason codes)."""
    V311 = "3.1.1"
    """For brokers that speak only 3.1.1 (e.g. the embedded amqtt broker the demo falls back to)."""


class BrokerSettings(BaseModel):
    """Broker address, credentials and reconnection policy, shared by agent and collector configs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="MQTT broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker TCP port")
    protocol: MqttProtocol = Field(MqttProtocol.V5, description="MQTT protocol version: '5' or '3.1.1'")
    username: str | None = Field(None, description="User name; null for an anonymous broker")
    password: SecretStr | None = Field(None, description="Password (needs username; never logged)")
    topic_root: str = Field(
        TOPIC_ROOT,
        pattern=r"^[^#+/][^#+]*[^#+/]$",
        description="Topic prefix shared by agents and collectors (no wildcards, no leading/trailing '/')",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds")
    reconnect_min_s: float = Field(1.0, gt=0, description="First wait before reconnecting to the broker")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest wait between reconnection attempts")

    @field_validator("password")
    @classmethod
    def _password_needs_username(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and info.data.get("username") is None:
            raise PydanticCustomError("needs_username", "password is set but username is not; set both")
        return value

    @field_validator("reconnect_max_s")
    @classmethod
    def _not_below_min(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("reconnect_min_s", 0):
            raise PydanticCustomError("order", "must not be less than reconnect_min_s")
        return value

    @property
    def address(self) -> str:
        """The broker for logs: never the credentials."""
        return f"mqtt://{self.host}:{self.port}"

    def client(
        self, *, identifier: str, will: aiomqtt.Will | None = None, timeout: float | None = None
    ) -> aiomqtt.Client:
        import aiomqtt

        protocol = (
            aiomqtt.ProtocolVersion.V5 if self.protocol is MqttProtocol.V5 else aiomqtt.ProtocolVersion.V311
        )
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            identifier=identifier,
            protocol=protocol,
            will=will,
            keepalive=self.keepalive_s,
            timeout=timeout,
        )
