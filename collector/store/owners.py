"""Which gateway each meter belongs to: a meter id is bound to one (site, gateway), provisioned in the
sites file or on first sight, and moves only by an explicit command (``kilowatch collector move-meter``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from collector.store.connection import Db


class Binding(StrEnum):
    """How a meter came to belong to its gateway; the ``how`` column."""

    FIRST_SEEN = "first_seen"
    """The first gateway it was seen from."""
    PROVISIONED = "provisioned"
    """The sites file names its gateway."""
    MOVED = "moved"
    """Moved there by ``kilowatch collector move-meter``."""


@dataclass(frozen=True, slots=True)
class OwnerRow:
    meter_id: str
    site: str
    gateway: str
    since: int
    """When it was bound there, UTC ms (collector clock)."""
    how: Binding


def owner(db: Db, meter: str) -> OwnerRow | None:
    row = db.execute("SELECT * FROM meter_owners WHERE meter_id = ?", (meter,)).fetchone()
    if row is None:
        return None
    meter_id, site, gateway, since, how = row
    return OwnerRow(meter_id, site, gateway, since, Binding(how))


def bind(db: Db, meter: str, site: str, gateway: str, since: int, how: Binding) -> OwnerRow | None:
    """Bind the meter to (site, gateway); returns the binding it replaced, if any."""
    previous = owner(db, meter)
    db.execute(
        "INSERT INTO meter_owners VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
        " site = excluded.site, gateway = excluded.gateway, since = excluded.since, how = excluded.how",
        (meter, site, gateway, since, how.value),
    )
    return previous
