"""Turning an MQTT message (topic + bytes) into a contract model, or a :class:`Rejected` saying why not.

Pure: no broker, no database. The ingest loop stores whatever this refuses, so nothing is lost.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from collector.metrics import RejectReason
from kilowatch.mqtt_contract import (
    CHANNEL_MESSAGES,
    ID_PATTERN,
    SCHEMA_VERSION,
    Message,
    parse_topic,
)

_MAX_ERRORS_SHOWN = 5


class Rejected(Exception):
    """A message that cannot be accepted; `detail` never quotes the payload beyond a field name."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


def parse_message(topic: str, payload: bytes, *, root: str) -> Message:
    """Validate one message against the topic it came on; raise :class:`Rejected` otherwise."""
    try:
        site, gateway, channel = parse_topic(topic, root=root)
    except ValueError as exc:
        raise Rejected(RejectReason.BAD_TOPIC, str(exc)) from exc
    for kind, ident in (("site", site), ("gateway", gateway)):
        if not re.fullmatch(ID_PATTERN, ident):
            raise Rejected(RejectReason.BAD_TOPIC, f"topic {kind} {ident!r} does not match {ID_PATTERN}")
    model = CHANNEL_MESSAGES[channel]
    try:
        # The common case in one step: pydantic parses and validates the bytes (no Python dict between), in
        # strict mode, where every value's physical range is checked in Rust too (see Reading.values).
        message = model.model_validate_json(payload, strict=True)
    except ValidationError:
        # Something is wrong, or a value is impossible (the lax model makes it bad): say what, the same way
        # whatever the fast path tripped on.
        message = _validate_slowly(model, payload)
    if (message.site, message.gateway) != (site, gateway):
        raise Rejected(
            RejectReason.TOPIC_MISMATCH,
            f"topic is for {site}/{gateway} but the payload says {message.site}/{message.gateway}",
        )
    return message


def _validate_slowly(model: type[Message], payload: bytes) -> Message:
    """JSON first, then the schema version, then the model: the reason a refused payload is refused.

    It could also accept a payload pydantic's JSON parser refused (one in UTF-16, say), as it did before
    the fast path.
    """
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8 and bad JSON
        raise Rejected(RejectReason.INVALID_JSON, f"{type(exc).__name__}: {exc}") from exc
    version = data.get("schema_version") if isinstance(data, dict) else None
    if type(version) is int and version != SCHEMA_VERSION:
        raise Rejected(
            RejectReason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {version} is not supported (this collector speaks {SCHEMA_VERSION})",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Rejected(RejectReason.INVALID_SCHEMA, _summarise(exc)) from exc


def _summarise(exc: ValidationError) -> str:
    """The first few validation errors as ``loc: message``, without the offending input."""
    errors = exc.errors(include_input=False, include_url=False)
    lines = [
        f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
        for e in errors[:_MAX_ERRORS_SHOWN]
    ]
    if len(errors) > _MAX_ERRORS_SHOWN:
        lines.append(f"... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return f"{exc.title}: " + "; ".join(lines)
