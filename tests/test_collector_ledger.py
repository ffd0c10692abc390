"""The SQLite ledger: idempotent ingestion and exact 15-minute intervals from cumulative counters."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from collector.ledger import (
    MAX_REJECTED_PAYLOAD,
    CounterEvent,
    CounterEventKind,
    IngestResult,
    Ledger,
    LedgerReader,
)
from kilowatch.mqtt_contract import SCHEMA_VERSION, ClockState, GatewayState, GatewayStatus
from tests.collector_support import at, batch, reading


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db")


def intervals(
    ledger: Ledger, meter: str = "m1"
) -> list[tuple[int, float | None, float | None, float | None, int]]:
    with ledger.reader() as r:
        return [
            (i.start_ms, i.energy_import_kwh, i.energy_export_kwh, i.max_kw, i.samples)
            for i in r.intervals(meter, at(0), at(23, 59))
        ]


def events(ledger: Ledger, meter: str = "m1") -> list[CounterEvent]:
    with ledger.reader() as r:
        return r.counter_events(meter)


# A day's morning of one meter: a poll every 4-7 minutes, import rising, export rising a little, a reset.
MORNING = [
    reading(at(10, 0), imp=100.0, exp=5.0, power_w=4000),
    reading(at(10, 7), imp=100.5, exp=5.0, power_w=4200),
    reading(at(10, 14), imp=101.0, exp=5.0, power_w=3900),
    reading(at(10, 16), imp=101.2, exp=5.1, power_w=6100),
    reading(at(10, 22), imp=101.9, exp=5.1, power_w=5000),
    reading(at(10, 29, 30), imp=102.6, exp=5.2, power_w=-800),
    reading(at(10, 37), imp=0.4, exp=0.0, power_w=1000),  # meter replaced: both counters restart
    reading(at(10, 44), imp=1.1, exp=0.1, power_w=1200),
    reading(at(10, 52), imp=1.3, power_w=900),  # export unreadable this time
    reading(at(11, 3), imp=2.0, exp=0.3, power_w=2000),
]


def test_one_batch_fills_meters_latest_readings_and_intervals(ledger: Ledger) -> None:
    result = ledger.ingest(batch(*MORNING))
    assert result == IngestResult(accepted=10, duplicates=0, counter_resets=2)
    with ledger.reader() as r:
        [meter] = r.meters()
        assert (meter.meter_id, meter.site, meter.gateway, meter.profile) == (
            "m1",
            "site1",
            "gw1",
            "eastron-sdm630",
        )
        assert (meter.first_seen, meter.last_seen) == (at(10, 0), at(11, 3))
        latest = r.latest("m1")
        assert latest is not None
        assert latest.ts == at(11, 3)
        assert latest.values == {"energy_import_kwh": 2.0, "energy_export_kwh": 0.3, "active_power_w": 2000}
        assert len(r.readings("m1", at(0), at(23))) == 10
    rows = {start: (imp, exp, max_kw, n) for start, imp, exp, max_kw, n in intervals(ledger)}
    assert sorted(rows) == [at(10, 0), at(10, 15), at(10, 30), at(10, 45), at(11, 0)]
    # 10:00 bucket: 1.0 kWh to 10:14 plus half of the 10:14-10:16 step (0.1).
    assert rows[at(10, 0)][0] == pytest.approx(1.1)
    assert rows[at(10, 0)][2:] == pytest.approx((4.2, 3))
    assert rows[at(10, 15)][2:] == pytest.approx((6.1, 3))
    # The 10:29:30-10:37 step went backwards: nothing, never negative.
    assert all(imp is not None and imp >= 0 for imp, *_ in rows.values())
    total_import = sum(imp for imp, *_ in rows.values() if imp is not None)
    assert total_import == pytest.approx((102.6 - 100.0) + (2.0 - 0.4))
    assert [(e.quantity, e.prev_value, e.value) for e in events(ledger)] == [
        ("energy_export_kwh", 5.2, 0.0),
        ("energy_import_kwh", 102.6, 0.4),
    ]


@pytest.mark.parametrize("seed", range(5))
def test_any_arrival_order_gives_exactly_the_in_order_result(tmp_path: Path, seed: int) -> None:
    in_order = Ledger(tmp_path / "in-order.db")
    for i, r in enumerate(MORNING):
        in_order.ingest(batch(r, seq=i))
    shuffled = Ledger(tmp_path / f"shuffled-{seed}.db")
    readings = MORNING.copy()
    random.Random(seed).shuffle(readings)
    resets = 0
    while readings:  # batches of 1-3 readings, late ones landing between stored neighbours
        size = random.Random(seed + len(readings)).randint(1, 3)
        resets += shuffled.ingest(batch(*readings[:size])).counter_resets
        readings = readings[size:]
    assert intervals(shuffled) == intervals(in_order)  # exact: recomputed from the same readings
    assert events(shuffled) == events(in_order)
    assert resets == len(events(in_order)) == 2


def test_a_late_reading_between_two_stored_ones_replaces_their_step(ledger: Ledger) -> None:
    ledger.ingest(batch(reading(at(10, 0), imp=10.0), reading(at(10, 30), imp=13.0)))
    # The 10:30 bucket holds the 10:30 reading (a sample) but no step yet: energy unknown, not zero.
    assert [imp for _, imp, *_ in intervals(ledger)] == [pytest.approx(1.5), pytest.approx(1.5), None]
    ledger.ingest(batch(reading(at(10, 14), imp=12.8)))  # most of it flowed early
    assert [imp for _, imp, *_ in intervals(ledger)] == [
        pytest.approx(2.8 + 0.2 / 16),
        pytest.approx(0.2 * 15 / 16),
        None,
    ]


def test_a_resent_batch_is_ignored_and_counted_never_double_counted(ledger: Ledger) -> None:
    first = ledger.ingest(batch(*MORNING[:4]))
    before = intervals(ledger)
    again = ledger.ingest(batch(*MORNING[:4]))
    assert (first.accepted, again.accepted, again.duplicates, again.counter_resets) == (4, 0, 4, 0)
    assert intervals(ledger) == before
    within = ledger.ingest(batch(MORNING[4], MORNING[4]))
    assert (within.accepted, within.duplicates) == (1, 1)


def test_a_reset_splitting_late_reading_does_not_count_the_reset_twice(ledger: Ledger) -> None:
    assert (
        ledger.ingest(batch(reading(at(10, 0), imp=500.0), reading(at(10, 30), imp=2.0))).counter_resets == 1
    )
    late = ledger.ingest(batch(reading(at(10, 10), imp=501.0)))  # the reset happened after 10:10
    assert late.counter_resets == 0
    [event] = events(ledger)
    assert (event.prev_ts, event.prev_value, event.ts, event.value) == (at(10, 10), 501.0, at(10, 30), 2.0)
    assert [imp for _, imp, *_ in intervals(ledger)] == [pytest.approx(1.0), 0.0, None]


def test_readings_from_an_unsynced_clock_are_kept_but_not_used_for_intervals(ledger: Ledger) -> None:
    ledger.ingest(
        batch(
            reading(at(10, 0), imp=10.0),
            reading(at(10, 20), imp=99.0, power_w=9e6, clock=ClockState.UNSYNCED),
            reading(at(10, 30), imp=11.0),
        )
    )
    assert [(imp, max_kw, n) for _, imp, _, max_kw, n in intervals(ledger)] == [
        (pytest.approx(0.5), None, 1),
        (pytest.approx(0.5), None, 0),  # the unsynced 10:20 reading is neither energy nor a sample
        (None, None, 1),
    ]
    with ledger.reader() as r:
        assert [x.clock for x in r.readings("m1", at(0), at(23))] == ["synced", "unsynced", "synced"]


def test_latest_is_only_replaced_by_a_newer_reading(ledger: Ledger) -> None:
    ledger.ingest(batch(reading(at(10, 30), power_w=5.0)))
    ledger.ingest(batch(reading(at(10, 0), power_w=1.0), site="site2", gateway="gw9"))
    with ledger.reader() as r:
        latest = r.latest("m1")
        meter = r.meter("m1")
    assert latest is not None
    assert latest.values == {"active_power_w": 5.0}
    assert meter is not None
    assert (meter.site, meter.gateway, meter.first_seen, meter.last_seen) == (
        "site1",
        "gw1",
        at(10, 0),
        at(10, 30),
    )


def test_a_rejected_payload_is_kept_up_to_the_cap(ledger: Ledger) -> None:
    big = b"x" * (MAX_REJECTED_PAYLOAD + 10)
    ledger.reject(topic="t", reason="invalid_json", detail="d", payload=big, received_at=at(10))
    with ledger.reader() as r:
        [row] = r.rejected()
    assert (len(row.payload), row.payload_size) == (MAX_REJECTED_PAYLOAD, MAX_REJECTED_PAYLOAD + 10)


def test_a_gateways_last_status_to_arrive_wins(ledger: Ledger) -> None:
    def status(state: GatewayState, ts: int) -> GatewayStatus:
        return GatewayStatus(
            schema_version=SCHEMA_VERSION,
            site="site1",
            gateway="gw1",
            state=state,
            ts=ts,
            agent_version="0.1.0",
        )

    ledger.record_status(status(GatewayState.ONLINE, at(10, 5)), received_at=at(10, 5))
    ledger.record_status(
        status(GatewayState.OFFLINE, at(10, 0)), received_at=at(11)
    )  # a will made at connect
    with ledger.reader() as r:
        [gw] = r.gateways()
    assert (gw.state, gw.ts, gw.received_at) == ("offline", at(10, 0), at(11))


def test_the_reader_is_read_only_and_sees_committed_data(ledger: Ledger) -> None:
    reader = LedgerReader(ledger.path)
    ledger.ingest(batch(reading(at(10), imp=1.0)))
    assert reader.ping()
    assert len(reader.meters()) == 1
    with pytest.raises(Exception, match="readonly"):
        reader._db.execute("DELETE FROM meters")
    reader.close()


def test_steps_longer_than_a_day_are_gaps_in_no_interval(ledger: Ledger) -> None:
    # A reading stamped 1970 by a clock that claimed to be synced, and a meter silent for three days.
    result = ledger.ingest(
        batch(reading(5_000, imp=1.0), reading(at(10), imp=10.0), reading(at(10, day=4), imp=50.0))
    )
    assert result.counter_resets == 0
    with ledger.reader() as r:
        rows = r.intervals("m1", 0, at(23, day=5))
    assert [(i.start_ms, i.energy_import_kwh, i.samples) for i in rows] == [
        (0, None, 1),
        (at(10), None, 1),
        (at(10, day=4), None, 1),
    ]
    assert [(e.kind, e.prev_ts, e.ts) for e in events(ledger)] == [
        (CounterEventKind.GAP, 5_000, at(10)),
        (CounterEventKind.GAP, at(10), at(10, day=4)),
    ]
