"""The collector's configuration file (``collector.yaml``): one pydantic model, every key defaulted.

``deploy/collector.example.yaml`` shows every key with its default; a test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from kilowatch.broker import BrokerSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(BrokerSettings):
    """Where the readings come from."""

    client_id: str = Field(
        "kilowatch-collector",
        min_length=1,
        max_length=128,
        description="MQTT client identifier; also names the persistent session the broker keeps for it",
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=2**32 - 1,
        description="MQTT 5: how long the broker keeps the session (and queues messages) while the collector "
        "is away, seconds (3.1.1: the session never expires)",
    )
    receive_maximum: int = Field(
        200,
        ge=2,
        le=65535,
        description="MQTT 5: unacknowledged messages the broker may send at once; the collector commits up "
        "to half of them per ledger transaction (3.1.1: the broker's max_inflight_messages rules)",
    )


class LedgerSettings(_Section):
    """The SQLite ledger: meters, readings' energy counters, 15-minute intervals, rejected messages."""

    path: Path = Field(
        Path("kilowatch.db"), description="SQLite file (created if missing; relative to the working folder)"
    )


class TsdbSettings(_Section):
    """A time-series database that takes the InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics)."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="Base URL, e.g. http://127.0.0.1:8086 (InfluxDB), http://127.0.0.1:8428 (VM)",
    )
    token: SecretStr | None = Field(None, description="API token; null when the TSDB needs none")
    org: str = Field("kilowatch", min_length=1, description="InfluxDB organisation (VM: ignored)")
    bucket: str = Field("kilowatch", min_length=1, description="InfluxDB bucket (VM: ignored)")
    timeout_s: float = Field(10, gt=0, le=300, description="Timeout of one write request, seconds")
    max_points_per_write: int = Field(
        5000, ge=1, le=1_000_000, description="Outbox rows are sent in requests of about this many points"
    )
    retry_min_s: float = Field(1.0, gt=0, description="First wait before retrying a failed write, seconds")
    retry_max_s: float = Field(60.0, gt=0, description="Longest wait between retries, seconds")

    @field_validator("retry_max_s")
    @classmethod
    def _not_below_min(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("retry_min_s", 0):
            raise ValueError("must not be less than retry_min_s")
        return value

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise ValueError("the URL must not carry credentials (they would reach logs); use token")
        return url


class ApiSettings(_Section):
    """The HTTP API (REST, /healthz, /metrics)."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on; 0.0.0.0 = all")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on")


class CollectorConfig(_Section):
    """Everything ``kilowatch collector run`` needs."""

    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="The MQTT broker")
    ledger: LedgerSettings = Field(default_factory=LedgerSettings, description="The SQLite ledger")
    tsdb: TsdbSettings | None = Field(None, description="Raw readings to a TSDB; null = no TSDB")
    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP API")
