"""Readings as InfluxDB line protocol, written by hand: the TSDB outbox stores it in the ledger's
transaction (in a worker thread), so the event loop never serialises points.

One line per reading with values: measurement ``meter``, tags gateway/meter/model (the profile id)/site
in key order, fields = the reading's values in name order, time = the reading's event time in ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from kilowatch.mqtt_contract import Reading

MEASUREMENT = "meter"

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


@lru_cache(maxsize=4096)
def _series(site: str, gateway: str, meter: str, model: str) -> str:
    """Measurement and tags, the same for every reading of a meter (cached: a few per meter)."""
    return f"{MEASUREMENT},gateway={_tag(gateway)},meter={_tag(meter)},model={_tag(model)},site={_tag(site)}"


def formatted_values(values: dict[str, float]) -> list[tuple[str, str]]:
    """(name, text) of each value, in the dict's order; the text is ``float.__repr__``, the shortest that
    reads back exactly (what json writes too, so the ledger's JSON of the values is built from the same)."""
    return list(zip(values, map(float.__repr__, values.values()), strict=True))


def line(site: str, gateway: str, reading: Reading, formatted: list[tuple[str, str]]) -> str:
    """The reading's line, from its :func:`formatted_values` (which must not be empty).

    Quantity names are canonical identifiers and values finite floats (the contract checks both), so
    fields need no escaping.
    """
    fields = ",".join([f"{name}={text}" for name, text in sorted(formatted)])
    return f"{_series(site, gateway, reading.meter, reading.profile)} {fields} {reading.ts}"


def lines(site: str, gateway: str, readings: Iterable[Reading]) -> list[str]:
    """One line per reading; a reading without values (all unreadable) has nothing to write."""
    return [line(site, gateway, r, formatted_values(r.values)) for r in readings if r.values]
