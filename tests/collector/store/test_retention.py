"""Compact readings and retention: what a meter-day costs in the ledger, and a ledger that stops growing
under retention while detection keeps its history."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from collector.store import Ledger, LedgerReader, ReadingRejection, RetentionPolicy
from kilowatch.mqtt_contract import SCHEMA_VERSION, ClockState, Quality, Reading, ReadingsBatch
from kilowatch.timebase import DAY_MS
from tests.ledger_support import LedgerAt

MINUTE_MS = 60_000

T0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS
"""A UTC midnight in 2026."""

QUANTITIES = (
    "voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a", "current_l3_a",
    "current_n_a", "active_power_w", "active_power_l1_w", "active_power_l2_w", "active_power_l3_w",
    "reactive_power_var", "apparent_power_va", "power_factor", "power_factor_l1", "power_factor_l2",
    "power_factor_l3", "frequency_hz", "energy_import_kwh", "energy_export_kwh",
)  # fmt: skip


class Meters:
    """`n` meters of one gateway read every minute, 20 quantities each, every value moving: the worst case
    for the ledger (a consumption meter's export counter standing still costs less)."""

    def __init__(self, n: int, seed: int = 7) -> None:
        self.names = [f"meter-{i:04d}" for i in range(n)]
        self.rnd = random.Random(seed)
        self.imported = [self.rnd.uniform(1_000, 90_000) for _ in range(n)]
        self.exported = [self.rnd.uniform(10, 900) for _ in range(n)]
        self.seq = 0
        self.sent: dict[str, list[tuple[int, float, float]]] = {meter: [] for meter in self.names}
        """Per meter, (ts, kW, kWh imported) of each reading made."""

    def batch(self, minute: int) -> ReadingsBatch:
        rnd, ts = self.rnd, T0 + minute * MINUTE_MS
        readings = []
        for i, meter in enumerate(self.names):
            power = round(rnd.uniform(500, 60_000), 1)
            self.imported[i] += power / 60_000
            self.exported[i] += rnd.uniform(0, 0.02)
            values = {q: round(rnd.uniform(0.5, 0.99), 3) for q in QUANTITIES if q.startswith("power_factor")}
            values |= {q: round(rnd.uniform(225, 240), 1) for q in QUANTITIES if q.startswith("voltage")}
            values |= {q: round(rnd.uniform(0, 90), 2) for q in QUANTITIES if q.startswith("current")}
            values |= {
                q: round(rnd.uniform(0, 20_000), 1)
                for q in QUANTITIES
                if q.startswith(("active_power_l", "reactive", "apparent"))
            }
            values |= {
                "active_power_w": power,
                "frequency_hz": round(rnd.uniform(49.9, 50.1), 2),
                "energy_import_kwh": round(self.imported[i], 2),
                "energy_export_kwh": round(self.exported[i], 2),
            }
            stamped = ts + rnd.randint(0, 900)
            self.sent[meter].append((stamped, power / 1000, values["energy_import_kwh"]))
            readings.append(
                Reading(
                    meter=meter,
                    profile="eastron-sdm630",
                    ts=stamped,
                    values=values,
                    quality=Quality.GOOD,
                    clock=ClockState.SYNCED,
                )
            )
        self.seq += 1
        return ReadingsBatch(
            schema_version=SCHEMA_VERSION, site="site1", gateway="gw1", spool_id="0123abcd", seq=self.seq,
            sent_at=ts, readings=readings,
        )  # fmt: skip

    def store(self, ledger: Ledger, minutes: range) -> None:
        for start in range(minutes.start, minutes.stop, 60):
            batches = [self.batch(m) for m in range(start, min(start + 60, minutes.stop))]
            ledger.store(batches, received_at=T0 + start * MINUTE_MS)


def file_bytes(path: Path) -> int:
    """The file's size once the WAL is checkpointed into it."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def prune_all(ledger: Ledger, now_ms: int) -> None:
    while ledger.prune(now_ms=now_ms, limit=5000).rows >= 5000:
        pass
    while ledger.reclaim(256):
        pass


def test_a_meter_day_at_one_minute_costs_under_100_kb(tmp_path: Path) -> None:
    """Readings in rows cost ~80 bytes each, in day blocks ~30: a ledger holding 9 days, the newest 2 in
    rows, stays under 100 KB per meter-day, intervals and batches included."""
    path, meters, days = tmp_path / "kilowatch.db", Meters(10), 9
    policy = RetentionPolicy(
        readings_ms=45 * DAY_MS, compact_after_ms=2 * DAY_MS, batches_ms=60 * DAY_MS,
        quarantine_ms=60 * DAY_MS, resolved_alerts_ms=DAY_MS, gateway_events_ms=DAY_MS,
    )  # fmt: skip
    with Ledger(path, retention=policy) as ledger:
        for day in range(days):
            meters.store(ledger, range(day * 1440, (day + 1) * 1440))
            prune_all(ledger, T0 + (day + 1) * DAY_MS)
    with sqlite3.connect(path) as db:
        (intervals,) = db.execute("SELECT count(*) FROM intervals").fetchone()
        (row_bytes,) = db.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'readings'").fetchone()
        packed, blob_bytes = db.execute(
            "SELECT sum(readings), sum(length(data)) FROM reading_blocks"
        ).fetchone()
        (in_rows,) = db.execute("SELECT count(*) FROM readings").fetchone()
    per_meter_day = file_bytes(path) / (10 * days)
    print(
        f"\nledger: {per_meter_day / 1000:.1f} KB per meter-day at 1-minute (20 quantities, {days} days, the "
        f"newest 2 in rows, intervals and batches included); a reading costs {row_bytes / in_rows:.0f} bytes "
        f"in rows, {blob_bytes / packed:.1f} in day blocks"
    )
    assert intervals == 10 * days * 96
    assert packed + in_rows == 10 * days * 1440  # none lost
    assert per_meter_day <= 100_000
    with LedgerReader(
        path
    ) as reader:  # what detection, reports and charts read: exact, blocks and rows alike
        for meter in meters.names[:3]:
            samples = reader.power_samples(meter, 0, 2**62)
            assert [(s.ts, s.kw, s.energy_kwh) for s in samples] == meters.sent[meter]
            assert reader.count_readings(meter, T0 + DAY_MS // 2, T0 + 8 * DAY_MS) == 7 * 1440 + 720


def test_readings_keep_what_detection_reads(ledger_at: LedgerAt) -> None:
    path, meters = ledger_at("kilowatch"), Meters(1)
    with Ledger(path) as ledger:
        batch = meters.batch(0)
        first = batch.readings[0]
        ledger.ingest(batch)
    with LedgerReader(path) as reader:
        [row] = reader.readings(first.meter, 0, 2**62)
        [sample] = reader.power_samples(first.meter, 0, 2**62)
        latest = reader.latest(first.meter)
    assert latest is not None
    assert latest.values == first.values
    kept = {"energy_import_kwh", "energy_export_kwh", "active_power_w", "frequency_hz"}
    kept |= {f"{q}_{p}_{u}" for q, u in (("voltage", "v"), ("current", "a")) for p in ("l1", "l2", "l3")}
    assert row.values.keys() == kept
    for q in ("energy_import_kwh", "energy_export_kwh", "active_power_w"):
        assert row.values[q] == first.values[q]  # exact: intervals and reports
    for q in kept - {"energy_import_kwh", "energy_export_kwh", "active_power_w"}:
        assert row.values[q] == pytest.approx(first.values[q], rel=1e-7)  # float32
    assert sample.kw == first.values["active_power_w"] / 1000
    assert sample.moving[0] == row.values["voltage_l1_v"]


def test_under_retention_the_file_levels_off_and_detection_keeps_its_history(tmp_path: Path) -> None:
    """Six retention windows of 2 days: the file stops growing after the first ones, each meter keeps its
    last 2 days, intervals stay for ever; a reading older than the window is refused by the ledger, not stored
    again, and still goes to the TSDB (which keeps every reading)."""
    path, meters, window_days = tmp_path / "kilowatch.db", Meters(10), 2
    policy = RetentionPolicy(
        readings_ms=window_days * DAY_MS, compact_after_ms=window_days * DAY_MS, batches_ms=DAY_MS,
        quarantine_ms=DAY_MS, resolved_alerts_ms=DAY_MS, gateway_events_ms=DAY_MS,
    )  # fmt: skip
    sizes = []
    with Ledger(path, retention=policy, outbox=True) as ledger:
        old = meters.batch(0)
        for day in range(6 * window_days):
            meters.store(ledger, range(day * 1440, (day + 1) * 1440))
            prune_all(ledger, T0 + (day + 1) * DAY_MS)
            ledger.outbox_delete(2**62)  # as the TSDB writer does once VictoriaMetrics has them
            sizes.append(file_bytes(path))
        refused = ledger.ingest(old.model_copy(update={"seq": 0, "spool_id": "another"}))
    print("\nledger size at the end of each day (MB):", [round(s / 1e6, 2) for s in sizes])
    # Past the first windows the file grows by the intervals alone (10 meters x 96 a day, < 100 bytes each),
    # while without retention each day added its readings (sizes[0]).
    settled = sizes[2 * window_days - 1 :]
    per_day = (settled[-1] - settled[0]) / (len(settled) - 1)
    assert per_day <= 10 * 96 * 100 < sizes[0] / 10
    end = T0 + 6 * window_days * DAY_MS
    assert refused.rejected_readings == {ReadingRejection.EXPIRED: 10}
    assert refused.accepted == 0
    assert refused.outbox_points == 10
    with LedgerReader(path) as reader:
        for meter in meters.names:
            samples = reader.power_samples(meter, 0, 2**62)
            assert samples[0].ts >= samples[-1].ts - window_days * DAY_MS
            assert samples[-1].ts >= end - MINUTE_MS
            assert len(samples) >= window_days * 1440 - 1
            assert len(reader.intervals(meter, T0, end)) == 6 * window_days * 96  # kept for ever
        assert reader.stored_batches() <= 1440 + 60 + 1


def test_a_readings_window_detection_cannot_live_with_is_refused() -> None:
    with pytest.raises(ValueError, match=r"readings_days \(30\) must exceed detection.history_days \(35\)"):
        CollectorConfig.model_validate({"ledger": {"retention": {"readings_days": 30}}})
    CollectorConfig.model_validate(
        {"ledger": {"retention": {"readings_days": 30}}, "detection": {"history_days": 20}}
    )
