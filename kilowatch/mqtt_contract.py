"""The MQTT contract between agents and collectors: topics and wire messages, defined once.

Topics live under ``kilowatch/v1/<site>/<gateway>/``:

- ``readings``: a :class:`ReadingsBatch` (QoS 1, not retained);
- ``status``: a :class:`GatewayStatus` (retained; the agent's birth message and last will);
- ``events``: a :class:`GatewayEvent` (QoS 1, not retained): something the collector must know happened
  on the gateway, such as readings its spool had to evict.

The JSON Schema of every message is exported to ``docs/mqtt/`` by ``kilowatch schemas`` and tests check
both sides (agent output, collector input) against those files, so the documentation cannot drift.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from kilowatch.quantities import QUANTITIES, is_quantity

TOPIC_ROOT = "kilowatch/v1"
SCHEMA_VERSION = 1

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
"""Site, gateway and meter ids: lower-case, no MQTT wildcard or separator characters, at most 64 long."""

Ident = Annotated[str, Field(pattern=ID_PATTERN, description="Lower-case id: a-z, 0-9, '_', '-', '.'")]
BootId = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f-]{8,64}$",
        description="The gateway's boot id (Linux: /proc/sys/kernel/random/boot_id): names the monotonic clock "
        "that `mono_ms` values count on",
    ),
]


class Channel(StrEnum):
    """The last topic level, which says what a message is."""

    READINGS = "readings"
    STATUS = "status"
    EVENTS = "events"


def topic(site: str, gateway: str, channel: Channel, *, root: str = TOPIC_ROOT) -> str:
    """The topic one gateway publishes `channel` on."""
    return f"{root}/{site}/{gateway}/{channel.value}"


def subscription(channel: Channel, *, root: str = TOPIC_ROOT) -> str:
    """The wildcard topic a collector subscribes to for `channel` from every site and gateway."""
    return f"{root}/+/+/{channel.value}"


def parse_topic(name: str, *, root: str = TOPIC_ROOT) -> tuple[str, str, Channel]:
    """Split a contract topic into (site, gateway, channel); ValueError when it is not one."""
    prefix = root + "/"
    if not name.startswith(prefix):
        raise ValueError(f"topic {name!r} is not under {root!r}")
    parts = name[len(prefix) :].split("/")
    if len(parts) != 3:
        raise ValueError(f"topic {name!r} is not <root>/<site>/<gateway>/<channel>")
    site, gateway, channel = parts
    try:
        return site, gateway, Channel(channel)
    except ValueError:
        raise ValueError(f"topic {name!r} has unknown channel {channel!r}") from None


class Quality(StrEnum):
    """How far a value (or a whole reading) can be trusted."""

    GOOD = "good"
    """Read from the meter in this cycle and decoded without complaint."""
    ERROR = "error"
    """Could not be read or decoded (timeout, exception, NaN sentinel); no value is sent."""
    STALE = "stale"
    """The value is an older one repeated (e.g. a frozen register); sent, but not fresh."""


class ClockState(StrEnum):
    """What the gateway knew about its own clock when it stamped a reading."""

    SYNCED = "synced"
    """The system clock was synchronised (NTP or an RTC); the timestamp is trustworthy."""
    UNSYNCED = "unsynced"
    """The clock was known not to be synchronised (e.g. a Raspberry Pi before NTP): do not trust it."""
    UNKNOWN = "unknown"
    """The gateway could not tell."""
    CORRECTED = "corrected"
    """Stamped while the clock was not synchronised, then re-dated by the agent from its monotonic clock
    once it was (`ts` = `mono_ms` + the offset found at synchronisation): trustworthy."""


def _check_values(values: dict[str, float]) -> dict[str, float]:
    for name, value in values.items():
        if not is_quantity(name):
            raise ValueError(f"unknown quantity {name!r} (see kilowatch.quantities)")
        if not math.isfinite(value):
            raise ValueError(f"quantity {name!r} is not a finite number")
    return values


def _check_quality_names(qualities: dict[str, Quality]) -> dict[str, Quality]:
    for name in qualities:
        if not is_quantity(name):
            raise ValueError(f"unknown quantity {name!r} (see kilowatch.quantities)")
    return qualities


_QUANTITY_KEYS: dict[str, JsonValue] = {"propertyNames": {"enum": list[JsonValue](sorted(QUANTITIES))}}
"""Puts the vocabulary into the exported JSON Schema, so non-Python consumers check names too."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reading(_Message):
    """One poll of one meter."""

    meter: Ident = Field(description="Meter id, unique across the deployment")
    profile: str = Field(min_length=1, max_length=64, description="Device profile id, e.g. eastron-sdm630")
    ts: int = Field(
        ge=0, description="Event time: when the meter was read, UTC, milliseconds since the epoch"
    )
    values: Annotated[dict[str, float], AfterValidator(_check_values)] = Field(
        description="Good (and stale) values by canonical quantity name; unreadable values are absent",
        json_schema_extra=_QUANTITY_KEYS,
    )
    quality: Quality = Field(description="good when every value is good, else the worst value quality")
    value_quality: Annotated[dict[str, Quality], AfterValidator(_check_quality_names)] = Field(
        default_factory=dict,
        description="Quality of each value that is not good (absent names are good)",
        json_schema_extra=_QUANTITY_KEYS,
    )
    clock: ClockState = Field(description="The gateway's clock state when it stamped `ts`")
    mono_ms: int | None = Field(
        None,
        ge=0,
        description="The gateway's monotonic clock (CLOCK_BOOTTIME, ms since its boot `boot_id` of the batch) "
        "when the meter was read: lets a reading stamped by an unsynchronised clock be re-dated later",
    )

    @model_validator(mode="after")
    def _quality_consistent(self) -> Reading:
        if self.quality is Quality.GOOD and self.value_quality:
            raise ValueError("quality is 'good' but value_quality lists values that are not")
        return self


class ReadingsBatch(_Message):
    """What a gateway publishes on ``.../readings``: readings from one or more meters."""

    schema_version: Literal[1] = Field(description="Version of this message format")
    site: Ident
    gateway: Ident
    seq: int = Field(ge=0, description="Per-gateway batch sequence number, increasing by one per batch")
    spool_id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{8,32}$",
        description="Which spool file numbered `seq` (a new spool, after a corrupt one was moved aside, "
        "starts again at 0): a resend is the same (site, gateway, spool_id, seq)",
    )
    sent_at: int = Field(ge=0, description="When the batch was published, UTC ms (gateway clock)")
    boot_id: BootId | None = Field(None, description="The boot the readings' `mono_ms` count from")
    readings: list[Reading] = Field(min_length=1, max_length=10_000)


class GatewayState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class MeterHealth(_Message):
    """How one meter has been answering since the agent started: what a technician checks first.

    Counts never go down while the agent runs; they start again from zero when it restarts (`since`).
    Errors are counted per attempt, so a garbled answer that a retry repaired still shows.
    """

    bus: Ident = Field(description="Name of the bus the meter is on")
    since: int = Field(ge=0, description="When these counts started (agent start), UTC ms")
    polls: int = Field(ge=0, description="Polls made (cycles where the breaker skipped the meter are not)")
    successes: int = Field(ge=0, description="Polls in which every request was answered")
    success_rate: float | None = Field(
        ge=0, le=1, description="successes / polls; null before the first poll"
    )
    skipped: int = Field(ge=0, description="Cycles the meter was not polled because its breaker was open")
    last_latency_s: float | None = Field(
        ge=0, description="How long the last poll held the bus (all its requests and retries), seconds"
    )
    mean_latency_s: float | None = Field(ge=0, description="Mean of that over every poll; null before one")
    timeouts: int = Field(ge=0, description="Attempts the meter did not answer in time")
    crc_errors: int = Field(ge=0, description="Attempts answered with a bad CRC or an unframeable answer")
    wrong_unit: int = Field(ge=0, description="Attempts answered by another unit id than the one asked")
    malformed: int = Field(ge=0, description="Attempts answered with something other than what was asked")
    exceptions: dict[Annotated[int, Field(ge=1, le=255)], Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="Modbus exception responses by exception code",
        json_schema_extra={"propertyNames": {"pattern": "^[1-9][0-9]{0,2}$"}},
    )
    last_good_ts: int | None = Field(
        ge=0, description="When the last successful poll started, UTC ms; null if none succeeded yet"
    )
    counter_resets: int = Field(
        0, ge=0, description="Times an energy counter read lower than before: a reset or a replaced meter"
    )
    breaker: Literal["closed", "open"] = Field(
        description="open: the meter stopped answering and is polled only now and then, as a probe"
    )


class ClockAnchor(_Message):
    """How one boot's monotonic clock maps onto UTC, learnt when the system clock became synchronised:
    `ts` = `mono_ms` + `offset_ms` for readings of that boot."""

    boot_id: BootId
    offset_ms: int = Field(description="UTC ms minus CLOCK_BOOTTIME ms, measured while synchronised")
    synced_at: int = Field(ge=0, description="When it was measured, UTC ms")


class SpoolStatus(_Message):
    """The agent's on-disk spool: what waits for the broker, and what was lost on the way."""

    pending_batches: int = Field(ge=0, description="Batches stored, not yet acknowledged by the broker")
    pending_readings: int = Field(ge=0, description="Readings in those batches")
    oldest_ts: int | None = Field(None, ge=0, description="Event time of the oldest pending reading, UTC ms")
    evicted_readings: int = Field(
        ge=0, description="Readings evicted (spool over its size or age bound) since the spool was created"
    )
    accepting: bool = Field(description="false: the disk is full or the spool failed; new readings are lost")


class GatewayStatus(_Message):
    """What a gateway publishes, retained, on ``.../status``: its birth message and its last will.

    While online the agent republishes it with `health` every ``health_interval_s`` (agent config).
    """

    schema_version: Literal[1]
    site: Ident
    gateway: Ident
    state: GatewayState
    ts: int = Field(ge=0, description="UTC ms, gateway clock")
    agent_version: str
    meters: list[Ident] = Field(default_factory=list, description="Meters this gateway polls")
    health: dict[Ident, MeterHealth] | None = Field(
        None, description="Per meter id, how it has been answering; absent from the last will"
    )
    clock_anchor: ClockAnchor | None = Field(
        None, description="This boot's monotonic clock against UTC, once the clock is synchronised"
    )
    spool: SpoolStatus | None = Field(None, description="The on-disk spool; absent from the last will")


class GatewayEventKind(StrEnum):
    SPOOL_EVICTED = "spool_evicted"
    """The spool went over its size or age bound: its oldest readings were deleted unpublished."""
    SPOOL_CORRUPT = "spool_corrupt"
    """The spool file was unreadable: moved aside (never deleted) and a fresh one started."""
    SPOOL_FULL = "spool_full"
    """The disk is full: new readings are not stored (and lost) until space is freed."""
    SPOOL_ACCEPTING = "spool_accepting"
    """The spool stores readings again after `spool_full`."""


class GatewayEvent(_Message):
    """What a gateway publishes on ``.../events``: one thing that happened, with how many readings it
    affected, so a collector can account for every reading it will never receive."""

    schema_version: Literal[1]
    site: Ident
    gateway: Ident
    ts: int = Field(ge=0, description="When it happened, UTC ms (gateway clock)")
    kind: GatewayEventKind
    readings: int = Field(ge=0, description="Readings it concerns (evicted, or not stored); 0 if none")
    oldest_ts: int | None = Field(None, ge=0, description="Event time of the oldest of them, UTC ms")
    newest_ts: int | None = Field(None, ge=0, description="Event time of the newest of them, UTC ms")
    detail: str = Field(max_length=1000, description="What happened, for a person")


Message = ReadingsBatch | GatewayStatus | GatewayEvent

CHANNEL_MESSAGES: dict[Channel, type[ReadingsBatch] | type[GatewayStatus] | type[GatewayEvent]] = {
    Channel.READINGS: ReadingsBatch,
    Channel.STATUS: GatewayStatus,
    Channel.EVENTS: GatewayEvent,
}
"""What each channel carries."""

MESSAGES: dict[str, type[BaseModel]] = {
    "readings-batch": ReadingsBatch,
    "gateway-status": GatewayStatus,
    "gateway-event": GatewayEvent,
}
"""Every wire message by the file stem its JSON Schema is exported under (docs/mqtt/<stem>.schema.json)."""
