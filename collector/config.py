"""The collector's configuration file (``collector.yaml``): one pydantic model, every key defaulted.

``deploy/collector.example.yaml`` shows every key with its default; a test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from kilowatch.broker import BrokerSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(BrokerSettings):
    """Where the readings come from."""

    client_id: str = Field(
        "kilowatch-collector", min_length=1, max_length=128, description="MQTT client identifier"
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
