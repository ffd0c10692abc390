"""The collector's configuration file (``collector.yaml``): one pydantic model, every key defaulted.

``deploy/collector.example.yaml`` is generated from the fields' descriptions by ``kilowatch schemas``.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from kilowatch.broker import BrokerSettings
from kilowatch.mqtt_contract import TimeWindow

if TYPE_CHECKING:
    from collector.store.connection import Postgres


SHARE_GROUP = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What a replicas' share group may be: a secret no gateway can guess."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_below_retry_min(value: float, info: ValidationInfo) -> float:
    if value < info.data.get("retry_min_s", 0):
        raise ValueError("must not be less than retry_min_s")
    return value


def _without_credentials(url: str, *, instead: str) -> str:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"the URL must not carry credentials (they would reach logs); use {instead}")
    return url


class MqttSettings(BrokerSettings):
    """Where the readings come from."""

    client_id: str = Field(
        "kilowatch-collector",
        min_length=1,
        max_length=128,
        description="MQTT client identifier. It also names the persistent session: the broker queues "
        "readings for it while the collector is away, and redelivers what was not acknowledged (the collector "
        "acknowledges a message only once the ledger has committed it). Run one collector per id. Mosquitto "
        "queues at most max_queued_messages (default 1000) per session: raise it (0 = no limit) to ride out a "
        "longer collector outage",
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=2**32 - 1,
        description="MQTT 5: how long the broker keeps the session (and queues messages) while the collector "
        "is away, seconds (default 7 days; 3.1.1: the session never expires)",
    )
    receive_maximum: int = Field(
        200,
        ge=2,
        le=65535,
        description="MQTT 5: unacknowledged messages the broker may send at once; the collector commits up "
        "to half of them per ledger transaction (3.1.1: the broker's max_inflight_messages rules)",
    )
    share_group: SecretStr | None = Field(
        None,
        description="Replicas: collectors with the same share_group (and each its own client_id) split the "
        "messages between them (an MQTT shared subscription, $share/<group>/...) and write one PostgreSQL "
        "ledger (ledger.url); each site is judged, the TSDB outbox drained, notifications sent and retention "
        "run by one replica at a time, taken over by another when it dies. The broker keeps a stopped "
        "replica's share of the messages in its session until it is back: restart it (systemd does), or "
        "start a collector with its client_id to drain it. A secret (never logged) of 16 to 64 letters, "
        "digits, - and _, e.g. from `openssl rand -hex 16`: Mosquitto 2.0 lets any login join a shared "
        "subscription and drops the messages it then picks that login for but may not deliver to it, so a "
        "gateway that knew the group could take every gateway's messages away from the collectors. null: "
        "one collector takes every message",
        examples=["3f9c2a7d51e04b8c9a6d0e2f4b7c1a58"],
    )

    @field_validator("share_group")
    @classmethod
    def _secret_group(cls, group: SecretStr | None) -> SecretStr | None:
        if group is not None and not SHARE_GROUP.fullmatch(group.get_secret_value()):
            raise ValueError(
                "must be a secret of 16 to 64 letters, digits, - and _ (e.g. from `openssl rand -hex 16`): "
                "any broker login that knew it could join the group and take messages from the collectors"
            )
        return group


class RetentionSettings(_Section):
    """How long the ledger keeps what would otherwise grow for ever (15-minute intervals are kept for ever;
    the TSDB keeps every raw quantity)."""

    readings_days: float = Field(
        45,
        gt=0,
        le=36_600,
        description="Raw readings kept per meter, days back from its newest reading (event time). Detection, "
        "reports and charts read them: it must exceed detection.history_days + catch_up_days + 2",
    )
    compact_after_days: float = Field(
        7,
        ge=2,
        description="Readings older than this many days (before their meter's newest) are packed into one "
        "compressed block per meter and day (~30 instead of ~80 bytes a reading). A reading arriving more "
        "than this less a day older than its meter's newest is kept out of the ledger (counted as expired; "
        "it still goes to the TSDB): the ledger could no longer book its energy between its neighbours exactly",
    )
    batches_days: float = Field(
        60,
        gt=0,
        description="Batches seen (redelivery detection) and seq gaps kept, days after they were received; "
        "keep it above the agents' spool.max_age_s",
    )
    quarantine_days: float = Field(
        60, gt=0, description="Quarantined readings kept, days after they were received"
    )
    resolved_alerts_days: float = Field(
        400, gt=0, description="Resolved alerts (and any notification of theirs still queued) kept, days"
    )
    gateway_events_days: float = Field(
        90,
        gt=0,
        description="Gateway events (spool losses, implausible and foreign meters, new spool numberings) kept, "
        "days after they were received",
    )
    interval_s: float = Field(
        600, gt=0, le=86_400, description="Seconds between pruning passes (each in short transactions)"
    )


class LedgerSettings(_Section):
    """The ledger: meters, readings' energy counters, 15-minute intervals, alerts, rejected messages. A SQLite
    file (the default) or a PostgreSQL database (`url`)."""

    path: Path = Field(
        Path("kilowatch.db"),
        description="SQLite file: meters, energy counters, 15-minute intervals, alerts, rejected messages "
        "(created if missing; relative to the working folder); leave it out when `url` is given",
    )
    url: SecretStr | None = Field(
        None,
        description="A PostgreSQL database instead of the SQLite file: postgresql://user:password@host:port/dbname "
        "(libpq's URL; the password may instead come from PGPASSWORD or ~/.pgpass). The database must exist "
        "and the user own it or be granted CREATE on it; the collector creates and upgrades the tables when it "
        "starts. Logs and errors show the URL without its password",
        examples=["postgresql://kilowatch@db.example.vn:5432/kilowatch"],
    )

    @field_validator("url")
    @classmethod
    def _postgresql(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and urlsplit(url.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return url

    @model_validator(mode="after")
    def _one_ledger(self) -> Self:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError("give either path (a SQLite file) or url (a PostgreSQL database), not both")
        return self

    @property
    def location(self) -> Path | Postgres:
        """The ledger the store opens."""
        from collector.store.connection import Postgres  # the store (numpy, psycopg) only when it is opened

        return self.path if self.url is None else Postgres(self.url.get_secret_value())

    retention: RetentionSettings = Field(
        default_factory=RetentionSettings,
        description="What the ledger forgets, and when (see the README's sizing formula)",
    )


class LimitsSettings(_Section):
    """What one gateway's credentials can cost the collector, however they are used."""

    max_payload_bytes: int = Field(
        2 * 2**20,
        ge=1024,
        le=256 * 2**20,
        description="A message larger than this is refused before it is parsed (reason too_large). The default "
        "matches the broker's max_packet_size in deploy/mosquitto.conf (2 MiB, more than twice the largest "
        "legitimate batch)",
    )
    max_meters_per_gateway: int = Field(
        1000,
        ge=1,
        description="Meters one gateway may report; readings of further new meter ids are refused and counted "
        "(kilowatch_collector_readings_rejected_total, reason too_many_meters)",
    )
    rejected_max_bytes: int = Field(
        64 * 2**20,
        ge=2**20,
        description="Refused messages are kept in the ledger (reason, detail, the first 4 KiB of the payload) "
        "up to about this many bytes in all; beyond it the oldest are dropped first",
    )
    rejected_retention_days: float = Field(
        30, gt=0, description="Refused messages older than this many days are dropped"
    )
    rejected_stored_per_minute: int = Field(
        60,
        ge=1,
        description="Refused messages kept (and logged) per gateway per minute; a gateway's further ones in "
        "that minute are only counted (kilowatch_collector_rejected_unstored_total), so a gateway flooding "
        "garbage costs bounded storage and logs",
    )


class PlausibilitySettings(_Section):
    """What the collector believes of a reading, whoever sent it."""

    future_skew_s: int = Field(
        300,
        ge=0,
        le=366 * 86_400,
        description="A reading stamped more than this many seconds ahead of the collector's clock is "
        "quarantined (reason implausible_time), never stored: it could pin the meter's latest reading",
    )
    retention_days: int = Field(
        400,
        ge=1,
        le=36_600,
        description="A reading older than this many days when it arrives is quarantined (reason "
        "implausible_time), as is any trustworthy time before 2000. Keep it above the agents' spool age bound "
        "so that a backlog after an outage is still taken",
    )
    default_max_kw: float = Field(
        10_000,
        gt=0,
        description="Maximum power of a meter the sites file does not rate, kW. A counter rising faster than "
        "its meter's maximum power allows is kept as a bad value, never booked as energy (a rated meter's "
        "maximum is 3 times the larger of its rated_kw and demand_limit_kw)",
    )

    def window(self) -> TimeWindow:
        return TimeWindow(future_ms=self.future_skew_s * 1000, past_ms=self.retention_days * 86_400_000)


class TsdbSettings(_Section):
    """A time-series database that takes the InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics)."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="Base URL, e.g. http://127.0.0.1:8086 (InfluxDB) or http://127.0.0.1:8428 "
        "(VictoriaMetrics, which ignores org and bucket and needs no token)",
        examples=["http://127.0.0.1:8428"],
    )
    token: SecretStr | None = Field(None, description="API token; null when the TSDB needs none")
    org: str = Field("kilowatch", min_length=1, description="InfluxDB organisation (VM: ignored)")
    bucket: str = Field("kilowatch", min_length=1, description="InfluxDB bucket (VM: ignored)")
    timeout_s: float = Field(10, gt=0, le=300, description="Timeout of one write request, seconds")
    max_points_per_write: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Readings wait in an outbox in the ledger until the TSDB takes them (nothing is lost "
        "while it is down); they are sent in requests of about this many points",
    )
    retry_min_s: float = Field(1.0, gt=0, description="First wait before retrying a failed write, seconds")
    retry_max_s: float = Field(
        60.0, gt=0, description="Longest wait between retries, seconds (the wait doubles, with jitter)"
    )

    _retry_max = field_validator("retry_max_s")(_not_below_retry_min)

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        return _without_credentials(url, instead="token")


class ApiSettings(_Section):
    """The HTTP API (REST, /healthz, /metrics)."""

    host: str = Field(
        "127.0.0.1", min_length=1, description="Address to listen on; 0.0.0.0 = every interface"
    )
    port: int = Field(
        8000, ge=1, le=65535, description="TCP port to listen on: serves /api/v1/..., /healthz and /metrics"
    )
    metrics_auth: Literal["key", "none"] = Field(
        "key",
        description="/metrics asks for an API key (or session) that sees every site; none: open to whoever "
        "reaches the port (a scraper on a private network)",
    )
    session_hours: float = Field(
        12, gt=0, le=24 * 30, description="How long a browser login lasts, hours (logging out ends it sooner)"
    )
    cookie_secure: bool = Field(
        True,
        description="Mark the session cookies Secure (sent over HTTPS only; browsers treat http://localhost "
        "as secure too); false only for plain HTTP on a trusted network",
    )


class AlertSettings(_Section):
    """How detectors' findings become alerts."""

    late_after_s: int = Field(
        900,
        ge=0,
        description="An alert stored more than this many seconds after its detector could first have raised "
        "it (event time; e.g. from a backlog a gateway flushed after an outage) is marked raised late; its "
        "messages say so",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_flat_tariff(cls, data: Any) -> Any:
        """Prices come from one place, the sites file: a flat rate here would silently disagree with it."""
        if isinstance(data, dict) and "tariff_vnd_per_kwh" in data:
            raise ValueError(
                "tariff_vnd_per_kwh is no longer read: findings are priced by sites.<site>.tariff "
                "(VND per kWh per time-of-use band) in the sites file named by detection.sites; remove it"
            )
        return data


class WebhookSettings(_Section):
    """Alerts and digests POSTed as JSON, signed with HMAC-SHA256 (also feeds Zalo or Telegram bridges)."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="Where to POST. No credentials in the URL; only its scheme and host are logged",
        examples=["https://hooks.example.vn/kilowatch"],
    )
    secret: SecretStr = Field(
        min_length=16,
        description="HMAC-SHA256 key (never logged). Each request carries X-Kilowatch-Signature: "
        "sha256=<hex HMAC of the body>, X-Kilowatch-Event and X-Kilowatch-Delivery (the same id on a retry, "
        "so the receiver can drop duplicates)",
        examples=["change-me-to-a-long-random-string"],
    )
    timeout_s: float = Field(10, gt=0, le=300, description="Timeout of one request, seconds")

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        return _without_credentials(url, instead="secret")


class EmailSettings(_Section):
    """Alerts and digests by e-mail over SMTP."""

    host: str = Field(min_length=1, description="SMTP server", examples=["smtp.example.vn"])
    port: int = Field(587, ge=1, le=65535, description="SMTP port: 587 (starttls), 465 (tls), 25 (none)")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls: upgrade after connecting; tls: TLS from the start; none: plain (local relays "
        "only)",
    )
    username: str | None = Field(None, min_length=1, description="SMTP login; null = no login")
    password: SecretStr | None = Field(None, description="SMTP password; needs username")
    sender: str = Field(min_length=3, description="From: address", examples=["kilowatch@example.vn"])
    to: list[str] = Field(min_length=1, description="Recipients", examples=[["facility@example.vn"]])
    timeout_s: float = Field(30, gt=0, le=300, description="Timeout of one SMTP session, seconds")

    @field_validator("password")
    @classmethod
    def _needs_username(cls, password: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if password is not None and info.data.get("username") is None:
            raise ValueError("password is set but username is not")
        return password


class NotifySettings(_Section):
    """Where alerts are sent: each opened and resolved alert, and a daily digest per site."""

    webhook: WebhookSettings | None = Field(
        None,
        description="A JSON POST per alert or digest, which chat bridges (Zalo, Telegram) can take; "
        "null = no webhook",
    )
    email: EmailSettings | None = Field(None, description="E-mail over SMTP; null = no e-mail")
    digest_at: time | None = Field(
        time(7, 0),
        description="Local time (Vietnam, UTC+7) at which each site's digest of the day before is sent: the "
        "alerts still open and what the day's alerts wasted (kWh, VND). Quote it. null = no digest",
    )
    monthly_report_at: time | None = Field(
        time(8, 0),
        description="Local time (Vietnam) on the 1st of each month at which each unit with a manager_email "
        "(the sites file's units) is mailed the month before's Directive 20 workbook; needs `email`. Quote "
        "it. null = no monthly report",
    )
    retry_min_s: float = Field(
        1.0, gt=0, description="First wait before retrying a failed notification, seconds"
    )
    retry_max_s: float = Field(
        300.0, gt=0, description="Longest wait between retries, seconds (the wait doubles, with jitter)"
    )
    poll_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds between looks at the outbox for notifications queued by another process",
    )

    @field_validator("digest_at", "monthly_report_at", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 18:30 as the number 1110
            raise ValueError("write the time in quotes, e.g. '18:30'")
        return value

    _retry_max = field_validator("retry_max_s")(_not_below_retry_min)


class DetectionSettings(_Section):
    """The detectors run inside the collector over the ledger's readings, in event time."""

    enabled: bool = Field(
        False,
        description="Run the detectors (after-hours load, idle equipment, peak-band overuse, street lighting, "
        "advertising, data quality) over the readings in the ledger and turn what they find into alerts. "
        "They judge event time: a backlog a gateway flushes after an outage gives the alerts live data "
        "would have given, marked raised late; a meter whose data has a gap is not judged across it. Needs "
        "`sites`",
    )
    sites: Path | None = Field(
        None,
        description="YAML file of detection settings per site and meter (role, rated kW, calendar, tariff, "
        "thresholds; see sites.example.yaml); only the meters it names are judged. A bad value stops the "
        "collector at start, naming the file, line and key. Relative to the working folder",
    )
    interval_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds between detection passes. A meter is judged again once a new 15-minute interval "
        "of it is complete or late data filled in its past",
    )
    history_days: int = Field(
        35,
        ge=1,
        le=400,
        description="Days of readings before the judged span that baselines learn from (after-hours load "
        "uses 28, peak overuse the same weekday of the 5 weeks before)",
    )
    catch_up_days: int = Field(
        7,
        ge=1,
        le=400,
        description="Days of event time judged at each meter's first pass after the collector starts; later "
        "passes judge from where the previous one ended, however far the data moved on (a backlog flushed "
        "faster than the passes loses nothing; what is found late is marked raised late). Findings that "
        "ended before the first pass's span only feed baselines and are counted in the log",
    )

    clock: Literal["wall", "data"] = Field(
        "wall",
        description="What 'now' is when telling a silent meter: the wall clock, or (replaying or backfilling "
        "history) the end of the newest reading of the meter's gateway, so that old data is not taken for "
        "meters gone silent (a whole gateway gone quiet is then told by its last will only)",
    )
    gap_wait_s: float = Field(
        120.0,
        ge=0,
        le=86_400,
        description="A gateway whose batches arrived with a gap in their seq (the rest still on their way: a "
        "replica restarting, a backlog sent out of order) has its meters judged once the gap closes, or once it "
        "is this many seconds old (the batches are lost): judging across the hole would end an episode that "
        "the missing data continues",
    )

    @model_validator(mode="after")
    def _sites_when_enabled(self) -> Self:
        if self.enabled and self.sites is None:
            raise ValueError("detection is enabled but no sites file is given (detection.sites)")
        return self


class CollectorConfig(_Section):
    """Everything ``kilowatch collector run`` needs."""

    mqtt: MqttSettings = Field(
        default_factory=MqttSettings,
        description="The MQTT broker the gateways publish readings to",
        examples=[{"host": "127.0.0.1"}],
    )
    ledger: LedgerSettings = Field(
        default_factory=LedgerSettings, description="The ledger: a SQLite file, or a PostgreSQL database"
    )
    tsdb: TsdbSettings | None = Field(
        None,
        description="Raw readings to a TSDB that takes the InfluxDB v2 write API (InfluxDB 2/3, "
        "VictoriaMetrics); null = no TSDB",
    )
    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP API")
    plausibility: PlausibilitySettings = Field(
        default_factory=PlausibilitySettings,
        description="Time window and counter rates readings are held to (meters are also bound to their "
        "gateway: see the sites file's `gateway` and `kilowatch collector move-meter`)",
    )
    limits: LimitsSettings = Field(
        default_factory=LimitsSettings, description="Size, rate and cardinality limits on what gateways send"
    )
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="Alerts made from findings")
    notify: NotifySettings = Field(
        default_factory=NotifySettings,
        description="Every alert that opens or resolves, and a daily digest per site, go to each channel, in "
        "Vietnamese and English. They wait in the ledger until sent: a restart or a channel that is down "
        "loses none. Silenced alerts are notified when their silence ends",
    )
    detection: DetectionSettings = Field(
        default_factory=DetectionSettings, description="Detectors run on the ledger's readings"
    )

    @model_validator(mode="after")
    def _replicas_share_postgresql(self) -> Self:
        if self.mqtt.share_group is not None and self.ledger.url is None:
            raise ValueError(
                "mqtt.share_group (replicas) needs a PostgreSQL ledger (ledger.url): replicas cannot share a "
                "SQLite file"
            )
        return self

    @model_validator(mode="after")
    def _readings_outlast_detection(self) -> Self:
        """Detection reads catch_up_days + history_days back from a day's start; refused readings come
        within a day of the retention."""
        detection, keep = self.detection, self.ledger.retention.readings_days
        needed = detection.history_days + detection.catch_up_days + 2
        if keep <= needed:
            raise ValueError(
                f"ledger.retention.readings_days ({keep:g}) must exceed detection.history_days "
                f"({detection.history_days}) + detection.catch_up_days ({detection.catch_up_days}) + 2 = "
                f"{needed}: detection reads that far back"
            )
        return self
