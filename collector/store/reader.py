"""Read-only queries for the API, reports, detection and the TSDB writer, on a connection of their own.

WAL lets these readers run while the ledger's writer commits; open one :class:`LedgerReader` per request
or per thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collector.detectors.series import Sample
from collector.store import connection, gateways, intervals, outbox, readings
from collector.store.clock import ClockStepSpan, QuarantineReason, QuarantineRow
from collector.store.connection import Closing, Location, location
from collector.store.delivery import RejectedRow, SeqGapRow
from collector.store.gateways import GatewayEventRow, GatewayRow, GatewayStateChange
from collector.store.intervals import CounterEvent, CounterEventKind, DayEnergy, IntervalRow
from collector.store.outbox import TsdbOutboxRow
from collector.store.readings import LatestRow, MeterRow, ReadingRow
from kilowatch.mqtt_contract import ClockState, GatewayState, Quality, Reading
from kilowatch.timebase import SLOT_MS


class LedgerReader(Closing):
    """Queries on a read-only connection of its own."""

    def __init__(self, where: Path | str | Location) -> None:
        self._db = connection.open_reader(location(where))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """The queries inside see one state of the ledger (a read transaction)."""
        self._db.begin(write=False)
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def ping(self) -> bool:
        """The file is readable and has the ledger's tables."""
        return self._db.execute("SELECT count(*) FROM meters").fetchone() is not None

    def meters(self) -> list[MeterRow]:
        rows = self._db.execute("SELECT * FROM meters ORDER BY meter_id").fetchall()
        return [MeterRow(*row) for row in rows]

    def meter(self, meter_id: str) -> MeterRow | None:
        row = self._db.execute("SELECT * FROM meters WHERE meter_id = ?", (meter_id,)).fetchone()
        return MeterRow(*row) if row else None

    def meter_gateways(self) -> dict[str, str]:
        """meter -> ``<site>/<gateway>`` it was last seen on."""
        return dict(self._db.execute("SELECT meter_id, site || '/' || gateway FROM meters"))

    def latest(self, meter_id: str) -> LatestRow | None:
        row = self._db.execute("SELECT * FROM latest WHERE meter_id = ?", (meter_id,)).fetchone()
        if row is None:
            return None
        meter, ts, values, quality, value_quality, clock, value_reasons = row
        return LatestRow(
            meter_id=meter,
            ts=ts,
            values=json.loads(values),
            quality=Quality(quality),
            value_quality={k: Quality(v) for k, v in json.loads(value_quality).items()},
            clock=ClockState(clock),
            value_reasons=json.loads(value_reasons),
        )

    def intervals(self, meter_id: str, start_ms: int, end_ms: int) -> list[IntervalRow]:
        """Buckets that overlap [start_ms, end_ms), oldest first."""
        rows = self._db.execute(
            "SELECT * FROM intervals WHERE meter_id = ? AND start_ms > ? AND start_ms < ? ORDER BY start_ms",
            (meter_id, start_ms - SLOT_MS, end_ms),
        ).fetchall()
        return [IntervalRow(*row) for row in rows]

    def daily_energy(self, meter_id: str, first_day: int, end_day: int) -> list[DayEnergy]:
        """The meter's imported energy per local day, `first_day` to `end_day` (exclusive, day numbers of
        :func:`kilowatch.timebase.local_day`), with how many of each day's intervals have it; days without
        any are left out."""
        return intervals.daily_energy(self._db, meter_id, first_day, end_day)

    def readings(self, meter_id: str, start_ms: int, end_ms: int) -> list[ReadingRow]:
        """Stored readings with start_ms <= ts < end_ms, oldest first (what the ledger keeps of them)."""
        return readings.stored(self._db, meter_id, start_ms, end_ms)

    def count_readings(self, meter_id: str, start_ms: int, end_ms: int) -> int:
        """Stored readings (whatever their clock) with start_ms <= ts < end_ms."""
        return readings.count(self._db, meter_id, start_ms, end_ms)

    def newest_trusted_ts(self, meter_id: str, until_ms: int = 2**62) -> int | None:
        """ts of the meter's newest reading at or before `until_ms` not stamped by an unsynchronised clock."""
        return readings.newest_trusted_ts(self._db, meter_id, until_ms)

    def power_samples(self, meter_id: str, start_ms: int, end_ms: int) -> list[Sample]:
        return readings.power_samples(self._db, meter_id, start_ms, end_ms)

    def counter_events(self, meter_id: str) -> list[CounterEvent]:
        rows = self._db.execute(
            "SELECT * FROM counter_events WHERE meter_id = ? ORDER BY ts, quantity", (meter_id,)
        ).fetchall()
        return [CounterEvent(m, q, CounterEventKind(k), *rest) for m, q, k, *rest in rows]

    def rejected(self, limit: int = 100) -> list[RejectedRow]:
        """The most recent refused messages, newest first."""
        rows = self._db.execute("SELECT * FROM rejected ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [RejectedRow(*row) for row in rows]

    def gateways(self) -> list[GatewayRow]:
        rows = self._db.execute("SELECT * FROM gateways ORDER BY site, gateway").fetchall()
        return [GatewayRow(s, g, st, ts, v, json.loads(m), r) for s, g, st, ts, v, m, r in rows]

    def offline_meters(self) -> set[str]:
        """Meters of the gateways whose last status is their last will."""
        rows = self._db.execute("SELECT meters FROM gateways WHERE state = ?", (GatewayState.OFFLINE.value,))
        return {meter for (meters,) in rows for meter in json.loads(meters)}

    def gateway_states(self, site: str) -> list[GatewayStateChange]:
        """The changes of state of the site's gateways, by gateway, in the order they were received."""
        rows = self._db.execute(
            "SELECT gateway, state, received_at FROM gateway_states WHERE site = ? ORDER BY gateway, received_at",
            (site,),
        )
        return [GatewayStateChange(gateway, GatewayState(state), at) for gateway, state, at in rows]

    def clock_steps(self, site: str) -> list[ClockStepSpan]:
        """Spans in which a gateway of the site had its clock stepped, oldest first."""
        rows = self._db.execute(
            "SELECT gateway, start_ts, end_ts FROM clock_steps WHERE site = ? ORDER BY start_ts", (site,)
        )
        return [ClockStepSpan(*row) for row in rows]

    def quarantine(self, meter_id: str | None = None, limit: int = 100) -> list[QuarantineRow]:
        """Quarantined readings (of one meter, or all), oldest stamp first."""
        where, params = ("", [limit]) if meter_id is None else ("WHERE meter_id = ?", [meter_id, limit])
        rows = self._db.execute(
            f"SELECT * FROM quarantine {where} ORDER BY ts, id LIMIT ?",  # noqa: S608 - a fixed clause
            params,
        ).fetchall()
        return [
            QuarantineRow(i, s, g, b, m, meter, ts, Reading.model_validate_json(r), QuarantineReason(q), at)
            for i, s, g, b, m, meter, ts, r, q, at in rows
        ]

    def quarantine_counts(self) -> dict[QuarantineReason, int]:
        rows = self._db.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall()
        return {QuarantineReason(reason): n for reason, n in rows}

    def stored_batches(self) -> int:
        """Batches stored (each (site, gateway, spool, seq) once)."""
        return int(self._db.execute("SELECT count(*) FROM batches").fetchone()[0])

    def seq_gaps(self) -> list[SeqGapRow]:
        rows = self._db.execute("SELECT * FROM seq_gaps ORDER BY site, gateway, spool, first_seq").fetchall()
        return [SeqGapRow(s, g, sp or None, first, last, at) for s, g, sp, first, last, at in rows]

    def gateways_awaiting(self, since_ms: int) -> set[str]:
        """``<site>/<gateway>`` of each gateway with a seq gap detected at or after `since_ms` (wall clock)."""
        rows = self._db.execute(
            "SELECT DISTINCT site, gateway FROM seq_gaps WHERE detected_at >= ?", (since_ms,)
        )
        return {f"{site}/{gateway}" for site, gateway in rows}

    def missing_batches(self) -> int:
        """Batches in every open seq gap."""
        (n,) = self._db.execute("SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM seq_gaps").fetchone()
        return int(n)

    def gateway_events(self, limit: int = 100) -> list[GatewayEventRow]:
        """The most recent gateway events, newest first."""
        rows = self._db.execute("SELECT * FROM gateway_events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [GatewayEventRow(i, s, g, ts, gateways.event_kind(k), *rest) for i, s, g, ts, k, *rest in rows]

    def outbox(self, max_points: int) -> list[TsdbOutboxRow]:
        """The oldest TSDB outbox rows, about `max_points` points' worth (at least one row)."""
        return outbox.take_points(self._db, max_points)

    def outbox_backlog(self) -> tuple[int, int]:
        """(rows, points) waiting in the TSDB outbox."""
        return outbox.points_backlog(self._db)
