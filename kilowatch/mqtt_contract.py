"""The MQTT contract between agents and collectors: topics and wire messages, defined once.

Topics live under ``kilowatch/v1/<site>/<gateway>/``:

- ``readings``: a :class:`ReadingsBatch` (QoS 1, not retained);
- ``status``: a :class:`GatewayStatus` (retained; the agent's birth message and last will);
- ``events``: a :class:`GatewayEvent` (QoS 1, not retained): something the collector must know happened
  on the gateway, such as readings its spool had to evict.

Bounds are part of the contract, so one message can never break a receiver: every integer fits a signed
64-bit column (:data:`INT64_MAX`), a trustworthy event time is not older than :data:`TS_FLOOR_MS`, and a
value outside its quantity's physical range (:mod:`kilowatch.quantities`) is never a value: it is ``bad``,
with a reason. What depends on the receiver's own clock (how far in the future or the past an event time
may be) is :class:`TimeWindow`, applied by the receiver.

The JSON Schema of every message is exported to ``docs/mqtt/`` by ``kilowatch schemas`` and tests check
both sides (agent output, collector input) against those files, so the documentation cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from operator import le
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from kilowatch.quantities import QUANTITIES, out_of_range

TOPIC_ROOT = "kilowatch/v1"
SCHEMA_VERSION = 1

INT64_MAX = 2**63 - 1
"""Largest integer on the wire: every count, seq and time fits a signed 64-bit column (SQLite INTEGER,
PostgreSQL BIGINT), which a larger one would overflow."""
TS_FLOOR_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: no trustworthy (synced or corrected) event time is older. Fixed, unlike
:class:`TimeWindow`, so the JSON Schema carries it."""


@dataclass(frozen=True, kw_only=True)
class TimeWindow:
    """How far a trustworthy event time may lie from the receiver's clock: the part of a timestamp's
    plausibility that depends on *now*, so no schema can carry it. The receiver (the collector, with its
    configured skew and retention) applies it; the contract fixes only :data:`TS_FLOOR_MS`.

    Attributes:
        future_ms: How far ahead of the receiver's clock a gateway's synced clock may be.
        past_ms: How old an event time may be: at least the agent's spool age bound, so a gateway's
            backlog after an outage is still taken.
    """

    future_ms: int = 5 * 60_000
    past_ms: int = 400 * 86_400_000

    def problem(self, ts: int, now_ms: int) -> str | None:
        """Why event time `ts` is implausible at the receiver's `now_ms`; None when it is plausible."""
        if ts > now_ms + self.future_ms:
            return f"ts {ts} is more than {self.future_ms} ms ahead of the receiver's clock ({now_ms})"
        if ts < max(TS_FLOOR_MS, now_ms - self.past_ms):
            return f"ts {ts} is older than the retention window ({self.past_ms} ms before {now_ms})"
        return None


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
    BAD = "bad"
    """Read and decoded, but impossible (outside its quantity's physical range: wrong word order, the
    wrong unit answering, broken firmware); not sent as a value, its reason is in `value_reasons`."""


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


class _ByQuantity:
    """A ``dict[str, X]`` whose keys are quantity names, checked by pydantic-core (a key must be one of the
    vocabulary's names): in Rust, where a Python validator per name cost more than the rest of a reading's
    validation. The JSON Schema stays that of the plain dict (plus the field's extras)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        names = core_schema.custom_error_schema(
            core_schema.literal_schema(list(QUANTITIES)),
            custom_error_type="unknown_quantity",
            custom_error_message="unknown quantity (see kilowatch.quantities)",
        )
        return core_schema.dict_schema(names, handler.generate_schema(get_args(source)[1]))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        assert schema["type"] == "dict"
        return handler(core_schema.dict_schema(core_schema.str_schema(), schema.get("values_schema")))


class _InRange(_ByQuantity):
    """A reading's values. Strict validation (the collector's fast path, see
    :func:`collector.validate.parse_message`) holds each to its quantity's physical range in pydantic-core,
    as a typed dict of the vocabulary of bounded, finite floats: no Python per value. A value outside fails
    it. Lax validation (the fallback, and every Python caller) takes the dict of :class:`_ByQuantity` and
    marks it :class:`_OutOfRange` when a value is, for :class:`Reading` to make those values bad."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        in_range = core_schema.typed_dict_schema(
            {
                q.name: core_schema.typed_dict_field(
                    core_schema.float_schema(ge=q.minimum, le=q.maximum, allow_inf_nan=False), required=False
                )
                for q in QUANTITIES.values()
            },
            extra_behavior="forbid",
        )
        checked = core_schema.no_info_after_validator_function(
            _marked, super().__get_pydantic_core_schema__(source, handler)
        )
        return core_schema.lax_or_strict_schema(lax_schema=checked, strict_schema=in_range)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        assert schema["type"] == "lax-or-strict"
        assert schema["lax_schema"]["type"] == "function-after"
        return super().__get_pydantic_json_schema__(schema["lax_schema"]["schema"], handler)


class _OutOfRange(dict[str, float]):
    """Values of which some are not finite or outside their physical range (lax validation only): what
    :class:`Reading`'s validator makes bad."""


def _marked(values: dict[str, float]) -> dict[str, float]:
    return values if _all_in_range(values) else _OutOfRange(values)


@lru_cache(maxsize=1024)
def _bounds(names: tuple[str, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The physical minimums and maximums of these quantities, in this order (a gateway sends the same names
    in the same order every time; bounded, whatever names it sends)."""
    return tuple(QUANTITIES[n].minimum for n in names), tuple(QUANTITIES[n].maximum for n in names)


def _all_in_range(values: dict[str, float]) -> bool:
    """Whether every value is finite and within its quantity's physical range, compared in C (map over
    operator.le; NaN compares false): no Python frame per value."""
    low, high = _bounds(tuple(values))
    return all(map(le, low, values.values())) and all(map(le, values.values(), high))


_QUALITY_ORDER = [Quality.GOOD, Quality.STALE, Quality.BAD, Quality.ERROR]
"""Best to worst: a reading's quality is its worst value's."""


def _worst(a: Quality, b: Quality) -> Quality:
    return max(a, b, key=_QUALITY_ORDER.index)


_QUANTITY_KEYS: dict[str, JsonValue] = {"propertyNames": {"enum": list[JsonValue](sorted(QUANTITIES))}}
"""Puts the vocabulary into the exported JSON Schema, so non-Python consumers check names too."""
_QUANTITY_RANGES: dict[str, JsonValue] = {
    **_QUANTITY_KEYS,
    "properties": {
        q.name: {"type": "number", "minimum": q.minimum, "maximum": q.maximum} for q in QUANTITIES.values()
    },
}
"""And each quantity's physical range, which a sender never puts in `values` (see :class:`Reading`)."""
_TRUSTED_TS_FLOOR: dict[str, JsonValue] = {
    "if": {"properties": {"clock": {"enum": ["synced", "corrected"]}}},
    "then": {"properties": {"ts": {"minimum": TS_FLOOR_MS}}},
}
"""Reading's rule that a trustworthy `ts` is not older than TS_FLOOR_MS, in the JSON Schema."""


class _Message(BaseModel):
    # defer_build: built on first use, so each side holds the validators of the messages it handles
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Reading(_Message):
    """One poll of one meter.

    A value outside its quantity's physical range is not a measurement. A sender leaves it out of
    `values`, marks it `bad` and says why in `value_reasons` (the JSON Schema refuses it in `values`). A
    receiver given one in `values` anyway does the same when it parses the reading, so the rest of the
    reading and of its batch still counts and the impossible value is never taken as `good`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_TRUSTED_TS_FLOOR)

    meter: Ident = Field(description="Meter id, unique across the deployment")
    profile: str = Field(min_length=1, max_length=64, description="Device profile id, e.g. eastron-sdm630")
    ts: int = Field(
        ge=0,
        le=INT64_MAX,
        description="Event time: when the meter was read, UTC, milliseconds since the epoch; not before "
        f"2000-01-01 ({TS_FLOOR_MS}) unless `clock` is unsynced or unknown",
    )
    values: Annotated[dict[str, float], _InRange()] = Field(
        description="Good (and stale) values by canonical quantity name, each within its quantity's "
        "physical range; unreadable and bad values are absent",
        json_schema_extra=_QUANTITY_RANGES,
    )
    quality: Quality = Field(description="good when every value is good, else the worst value quality")
    value_quality: Annotated[dict[str, Quality], _ByQuantity()] = Field(
        default_factory=dict,
        description="Quality of each value that is not good (absent names are good)",
        json_schema_extra=_QUANTITY_KEYS,
    )
    value_reasons: Annotated[dict[str, Annotated[str, Field(max_length=200)]], _ByQuantity()] = Field(
        default_factory=dict,
        description="Why each bad value was refused (what was decoded, and the range it broke)",
        json_schema_extra=_QUANTITY_KEYS,
    )
    clock: ClockState = Field(description="The gateway's clock state when it stamped `ts`")
    mono_ms: int | None = Field(
        None,
        ge=0,
        le=INT64_MAX,
        description="The gateway's monotonic clock (CLOCK_BOOTTIME, ms since its boot `boot_id` of the batch) "
        "when the meter was read: lets a reading stamped by an unsynchronised clock be re-dated later",
    )

    @model_validator(mode="after")
    def _checked(self) -> Reading:
        """Impossible values made bad; ValueError if the reading contradicts itself."""
        if type(self.values) is _OutOfRange:
            self._make_impossible_values_bad()
        if self.value_quality or self.ts < TS_FLOOR_MS:  # else nothing to contradict (the common case)
            self._check_consistent()
        return self

    def _make_impossible_values_bad(self) -> None:
        """Move every value outside its physical range out of `values`, as `bad` with a reason; ValueError
        for a value that is not a number at all (NaN, infinite). Only while validating: the model is frozen
        for everyone else (and pydantic keeps the instance an after-validator returns only if it is this
        one)."""
        refused = {}
        for name, value in self.values.items():
            if not math.isfinite(value):
                raise ValueError(f"quantity {name!r} is not a finite number")
            if (why := out_of_range(name, value)) is not None:
                refused[name] = why
        changes: dict[str, object] = {
            "values": {name: value for name, value in self.values.items() if name not in refused},
            "value_quality": {**self.value_quality, **dict.fromkeys(refused, Quality.BAD)},
            "value_reasons": {**self.value_reasons, **refused},
            "quality": _worst(self.quality, Quality.BAD),
        }
        for field_name, new in changes.items():
            object.__setattr__(self, field_name, new)
        self.__pydantic_fields_set__.update(changes)

    def _check_consistent(self) -> None:
        if self.quality is Quality.GOOD and self.value_quality:
            raise ValueError("quality is 'good' but value_quality lists values that are not")
        if self.value_quality and (
            sent := [n for n, q in self.value_quality.items() if q is Quality.BAD and n in self.values]
        ):
            raise ValueError(f"values {sent} are marked bad: a bad value is not sent")
        if self.clock in (ClockState.SYNCED, ClockState.CORRECTED) and self.ts < TS_FLOOR_MS:
            raise ValueError(f"ts {self.ts} is before 2000-01-01 ({TS_FLOOR_MS}) on a {self.clock} clock")


class ReadingsBatch(_Message):
    """What a gateway publishes on ``.../readings``: readings from one or more meters."""

    schema_version: Literal[1] = Field(description="Version of this message format")
    site: Ident
    gateway: Ident
    seq: int = Field(
        ge=0, le=INT64_MAX, description="Per-gateway batch sequence number, increasing by one per batch"
    )
    spool_id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{8,32}$",
        description="Which spool file numbered `seq` (a new spool, after a corrupt one was moved aside, "
        "starts again at 0): a resend is the same (site, gateway, spool_id, seq)",
    )
    sent_at: int = Field(
        ge=0, le=INT64_MAX, description="When the batch was published, UTC ms (gateway clock)"
    )
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
    since: int = Field(ge=0, le=INT64_MAX, description="When these counts started (agent start), UTC ms")
    polls: int = Field(
        ge=0, le=INT64_MAX, description="Polls made (cycles where the breaker skipped the meter are not)"
    )
    successes: int = Field(ge=0, le=INT64_MAX, description="Polls in which every request was answered")
    success_rate: float | None = Field(
        ge=0, le=1, description="successes / polls; null before the first poll"
    )
    skipped: int = Field(
        ge=0, le=INT64_MAX, description="Cycles the meter was not polled because its breaker was open"
    )
    last_latency_s: float | None = Field(
        ge=0, description="How long the last poll held the bus (all its requests and retries), seconds"
    )
    mean_latency_s: float | None = Field(ge=0, description="Mean of that over every poll; null before one")
    timeouts: int = Field(ge=0, le=INT64_MAX, description="Attempts the meter did not answer in time")
    crc_errors: int = Field(
        ge=0, le=INT64_MAX, description="Attempts answered with a bad CRC or an unframeable answer"
    )
    wrong_unit: int = Field(
        ge=0, le=INT64_MAX, description="Attempts answered by another unit id than the one asked"
    )
    malformed: int = Field(
        ge=0, le=INT64_MAX, description="Attempts answered with something other than what was asked"
    )
    exceptions: dict[Annotated[int, Field(ge=1, le=255)], Annotated[int, Field(ge=1, le=INT64_MAX)]] = Field(
        default_factory=dict,
        description="Modbus exception responses by exception code",
        json_schema_extra={"propertyNames": {"pattern": "^[1-9][0-9]{0,2}$"}},
    )
    last_good_ts: int | None = Field(
        ge=0,
        le=INT64_MAX,
        description="When the last successful poll started, UTC ms; null if none succeeded yet",
    )
    counter_resets: int = Field(
        0,
        ge=0,
        le=INT64_MAX,
        description="Times an energy counter read lower than before: a reset or a replaced meter",
    )
    implausible_values: int = Field(
        0,
        ge=0,
        le=INT64_MAX,
        description="Values decoded outside their quantity's physical range, sent as bad",
    )
    implausible: bool = Field(
        False,
        description="true: the meter's answers decode to impossible values (wrong word order or unit id, "
        "broken firmware); set by the first such poll, cleared after a few clean ones",
    )
    breaker: Literal["closed", "open"] = Field(
        description="open: the meter stopped answering and is polled only now and then, as a probe"
    )


class ClockAnchor(_Message):
    """How one boot's monotonic clock maps onto UTC, learnt when the system clock became synchronised:
    `ts` = `mono_ms` + `offset_ms` for readings of that boot."""

    boot_id: BootId
    offset_ms: int = Field(
        ge=-INT64_MAX - 1,
        le=INT64_MAX,
        description="UTC ms minus CLOCK_BOOTTIME ms, measured while synchronised",
    )
    synced_at: int = Field(ge=0, le=INT64_MAX, description="When it was measured, UTC ms")


class SpoolStatus(_Message):
    """The agent's on-disk spool: what waits for the broker, and what was lost on the way."""

    pending_batches: int = Field(
        ge=0, le=INT64_MAX, description="Batches stored, not yet acknowledged by the broker"
    )
    pending_readings: int = Field(ge=0, le=INT64_MAX, description="Readings in those batches")
    oldest_ts: int | None = Field(
        None, ge=0, le=INT64_MAX, description="Event time of the oldest pending reading, UTC ms"
    )
    evicted_readings: int = Field(
        ge=0,
        le=INT64_MAX,
        description="Readings evicted (spool over its size or age bound) since the spool was created",
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
    ts: int = Field(ge=0, le=INT64_MAX, description="UTC ms, gateway clock")
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
    METER_IMPLAUSIBLE = "meter_implausible"
    """A meter's answers decode to values outside physical ranges (named in `detail`): they are sent as
    bad until it reads plausibly again."""
    METER_PLAUSIBLE = "meter_plausible"
    """The meter named in `detail` reads plausibly again after `meter_implausible`."""


class GatewayEvent(_Message):
    """What a gateway publishes on ``.../events``: one thing that happened, with how many readings it
    affected, so a collector can account for every reading it will never receive."""

    schema_version: Literal[1]
    site: Ident
    gateway: Ident
    ts: int = Field(ge=0, le=INT64_MAX, description="When it happened, UTC ms (gateway clock)")
    kind: GatewayEventKind
    readings: int = Field(
        ge=0, le=INT64_MAX, description="Readings it concerns (evicted, or not stored); 0 if none"
    )
    oldest_ts: int | None = Field(
        None, ge=0, le=INT64_MAX, description="Event time of the oldest of them, UTC ms"
    )
    newest_ts: int | None = Field(
        None, ge=0, le=INT64_MAX, description="Event time of the newest of them, UTC ms"
    )
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
