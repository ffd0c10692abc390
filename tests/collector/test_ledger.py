"""The SQLite ledger: idempotent ingestion and exact 15-minute intervals from cumulative counters."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable

import pytest

from collector.line_protocol import formatted_values
from collector.store import (
    MAX_REJECTED_PAYLOAD,
    CounterEvent,
    CounterEventKind,
    IngestResult,
    Item,
    LatestRow,
    Ledger,
    LedgerReader,
    MeterRow,
    QuarantineReason,
    RejectedMessage,
)
from collector.store.connection import Db
from collector.store.readings import values_json
from kilowatch.mqtt_contract import SCHEMA_VERSION, ClockState, GatewayState, GatewayStatus, Reading
from kilowatch.quantities import QUANTITIES
from kilowatch.timebase import SLOT_MS
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt

IntervalTuple = tuple[int, float | None, float | None, float | None, int]
"""(start_ms, import kWh, export kWh, max kW, samples) of one bucket."""
MeterState = tuple[list[IntervalTuple], list[CounterEvent], LatestRow | None, MeterRow | None, int]
"""(intervals, counter events, latest, meter row, number of readings) of one meter."""


@pytest.fixture
def ledger(ledger_at: LedgerAt) -> Ledger:
    return Ledger(ledger_at("ledger"))


def intervals(ledger: Ledger, meter: str = "m1") -> list[IntervalTuple]:
    with ledger.reader() as r:
        return [
            (i.start_ms, i.energy_import_kwh, i.energy_export_kwh, i.max_kw, i.samples)
            for i in r.intervals(meter, at(0), at(23, 59))
        ]


def assert_same_intervals(got: list[IntervalTuple], want: list[IntervalTuple]) -> None:
    """Equal up to floating-point rounding: buckets, samples, max_kw and which energies are known exactly.

    A late reading takes its neighbours' step out of the intervals again and puts its own two in, so the
    sums differ from in-order arrival by rounding only.
    """

    def known(rows: list[IntervalTuple]) -> list[tuple[int, bool, bool, float | None, int]]:
        return [(start, imp is None, exp is None, max_kw, n) for start, imp, exp, max_kw, n in rows]

    def energy(rows: list[IntervalTuple]) -> list[float]:
        return [x for _, imp, exp, *_ in rows for x in (imp, exp) if x is not None]

    assert known(got) == known(want)
    assert energy(got) == pytest.approx(energy(want), rel=1e-9, abs=1e-12)


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
def test_any_arrival_order_gives_the_in_order_result(ledger_at: LedgerAt, seed: int) -> None:
    in_order = Ledger(ledger_at("in-order"))
    for i, r in enumerate(MORNING):
        in_order.ingest(batch(r, seq=i))
    shuffled = Ledger(ledger_at(f"shuffled-{seed}"))
    readings = MORNING.copy()
    random.Random(seed).shuffle(readings)
    resets = 0
    while readings:  # batches of 1-3 readings, late ones landing between stored neighbours
        size = random.Random(seed + len(readings)).randint(1, 3)
        resets += shuffled.ingest(batch(*readings[:size])).counter_resets
        readings = readings[size:]
    assert_same_intervals(intervals(shuffled), intervals(in_order))
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


def test_readings_from_an_unsynced_clock_are_quarantined_not_stored_nor_in_intervals(ledger: Ledger) -> None:
    result = ledger.ingest(
        batch(
            reading(at(10, 0), imp=10.0),
            reading(at(10, 20), imp=99.0, power_w=9e6, clock=ClockState.UNSYNCED),
            reading(at(10, 30), imp=11.0),
        )
    )
    assert (result.accepted, result.duplicates) == (2, 0)
    assert result.quarantined == {QuarantineReason.NO_MONOTONIC_TIME: 1}
    assert [(imp, max_kw, n) for _, imp, _, max_kw, n in intervals(ledger)] == [
        (pytest.approx(0.5), None, 1),
        (pytest.approx(0.5), None, 0),  # the unsynced 10:20 reading is neither energy nor a sample
        (None, None, 1),
    ]
    with ledger.reader() as r:
        assert [x.clock for x in r.readings("m1", at(0), at(23))] == ["synced", "synced"]
        [kept] = r.quarantine()
    assert (kept.meter_id, kept.ts, kept.reason, kept.reading.values["active_power_w"]) == (
        "m1",
        at(10, 20),
        QuarantineReason.NO_MONOTONIC_TIME,
        9e6,
    )


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
    reader = LedgerReader(ledger.where)
    ledger.ingest(batch(reading(at(10), imp=1.0)))
    assert reader.ping()
    assert len(reader.meters()) == 1
    with pytest.raises(Exception, match=r"readonly|read-only"):
        reader._db.execute("DELETE FROM meters")
    reader.close()


def test_steps_longer_than_a_day_are_gaps_in_no_interval(ledger: Ledger) -> None:
    # A reading stamped 1970 by a clock that could not tell, and a meter silent for three days.
    result = ledger.ingest(
        batch(
            reading(5_000, imp=1.0, clock=ClockState.UNKNOWN),
            reading(at(10), imp=10.0),
            reading(at(10, day=4), imp=50.0),
        )
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


def test_a_reading_between_two_splits_their_step_as_if_it_had_come_in_order(ledger_at: LedgerAt) -> None:
    late = Ledger(ledger_at("late"))
    late.ingest(batch(reading(at(10, 0), imp=10.0), reading(at(11, 0), imp=14.0)))
    assert [imp for _, imp, *_ in intervals(late)] == [1.0, 1.0, 1.0, 1.0, None]
    late.ingest(batch(reading(at(10, 20), imp=13.0)))  # 3 kWh in the first 20 minutes, 1 in the other 40
    rows = intervals(late)
    assert [(start, n) for start, _, _, _, n in rows] == [
        (at(10, 0), 1),
        (at(10, 15), 1),
        (at(10, 30), 0),
        (at(10, 45), 0),
        (at(11, 0), 1),
    ]
    assert [imp for _, imp, *_ in rows[:4]] == pytest.approx([2.25, 0.75 + 0.25, 0.375, 0.375])
    assert rows[4][1] is None  # a sample, no step after it yet
    in_order = Ledger(ledger_at("in-order"))
    for ts, imp in ((at(10, 0), 10.0), (at(10, 20), 13.0), (at(11, 0), 14.0)):
        in_order.ingest(batch(reading(ts, imp=imp)))
    assert_same_intervals(rows, intervals(in_order))
    assert events(late) == events(in_order) == []


def test_a_bucket_a_split_leaves_with_nothing_reads_zero_not_no_data(ledger: Ledger) -> None:
    ledger.ingest(batch(reading(at(10, 0), imp=10.0), reading(at(10, 30), imp=11.0)))
    ledger.ingest(batch(reading(at(10, 15), imp=11.0)))  # all of it flowed before 10:15
    assert [imp for _, imp, *_ in intervals(ledger)] == [1.0, 0.0, None]


def test_a_reading_that_splits_a_reset_keeps_the_reset_count_exact(ledger_at: LedgerAt) -> None:
    ledger = Ledger(ledger_at("late"))
    assert (
        ledger.ingest(batch(reading(at(10, 0), imp=500.0), reading(at(10, 30), imp=2.0))).counter_resets == 1
    )
    # Below both: the counter went back twice (500 -> 300 -> 2), one more reset than known.
    assert ledger.ingest(batch(reading(at(10, 10), imp=300.0))).counter_resets == 1
    assert [(e.kind, e.prev_value, e.value) for e in events(ledger)] == [
        (CounterEventKind.RESET, 500.0, 300.0),
        (CounterEventKind.RESET, 300.0, 2.0),
    ]
    # Then the 300 -> 2 reset happened before 10:20: it moves, and 1 kWh flowed from 10:20 to 10:30.
    assert ledger.ingest(batch(reading(at(10, 20), imp=1.0))).counter_resets == 0
    assert [(e.prev_ts, e.ts) for e in events(ledger)] == [(at(10, 0), at(10, 10)), (at(10, 10), at(10, 20))]
    assert [imp for _, imp, *_ in intervals(ledger)] == [0.0, pytest.approx(1.0), None]
    in_order = Ledger(ledger_at("in-order"))
    resets = sum(
        in_order.ingest(batch(reading(ts, imp=imp))).counter_resets
        for ts, imp in ((at(10, 0), 500.0), (at(10, 10), 300.0), (at(10, 20), 1.0), (at(10, 30), 2.0))
    )
    assert resets == 1 + 1 + 0 == len([e for e in events(ledger) if e.kind is CounterEventKind.RESET])
    assert_same_intervals(intervals(ledger), intervals(in_order))
    assert events(ledger) == events(in_order)


def test_readings_that_split_a_gap_put_its_energy_into_intervals(ledger: Ledger) -> None:
    def energy() -> dict[int, float | None]:
        with ledger.reader() as r:
            return {i.start_ms: i.energy_import_kwh for i in r.intervals("m1", at(0), at(0, day=3))}

    ledger.ingest(batch(reading(at(0), imp=10.0), reading(at(12, day=2), imp=46.0)))  # 36 h apart
    assert energy() == {at(0): None, at(12, day=2): None}
    [gap] = events(ledger)
    assert (gap.kind, gap.prev_ts, gap.ts) == (CounterEventKind.GAP, at(0), at(12, day=2))
    # One hour in: 1 kWh over the first four buckets; the remaining 35 h are still a gap.
    assert ledger.ingest(batch(reading(at(1), imp=11.0))).counter_resets == 0
    assert energy() == {
        at(0): 0.25,
        at(0, 15): 0.25,
        at(0, 30): 0.25,
        at(0, 45): 0.25,
        at(1): None,
        at(12, day=2): None,
    }
    [gap] = events(ledger)
    assert (gap.kind, gap.prev_ts, gap.ts) == (CounterEventKind.GAP, at(1), at(12, day=2))
    # Splitting the rest into 17 h and 18 h: every bucket of the 36 h gets its 0.25 kWh and the gap is gone.
    ledger.ingest(batch(reading(at(18), imp=28.0)))
    rows = energy()
    assert sorted(rows) == [at(0) + i * SLOT_MS for i in range(36 * 4 + 1)]
    assert [rows[start] for start in sorted(rows)[:-1]] == pytest.approx([0.25] * 36 * 4)
    assert rows[at(12, day=2)] is None
    assert events(ledger) == []


def test_duplicates_within_one_batch_keep_the_first_and_are_counted(ledger: Ledger) -> None:
    readings = [
        reading(at(10, 30), imp=2.0),
        reading(at(10, 0), imp=1.0),
        reading(at(10, 0), imp=99.0, power_w=5000),  # same (meter, ts), other values: ignored
        reading(at(10, 15), imp=1.5),
        reading(at(10, 30), imp=2.0),
        reading(at(10, 15), meter="m2", imp=7.0),  # same ts, another meter: not a duplicate
    ]
    assert ledger.ingest(batch(*readings)) == IngestResult(accepted=4, duplicates=2, counter_resets=0)
    expected = [
        (at(10, 0), 0.5, None, None, 1),
        (at(10, 15), 0.5, None, None, 1),
        (at(10, 30), None, None, None, 1),
    ]
    assert intervals(ledger) == expected
    assert intervals(ledger, "m2") == [(at(10, 15), None, None, None, 1)]
    random.Random(1).shuffle(readings)
    assert ledger.ingest(batch(*readings)) == IngestResult(duplicates=6, duplicate_batch=True)
    assert intervals(ledger) == expected


def test_an_hour_of_one_second_readings_sums_to_the_counter_deltas(ledger_at: LedgerAt) -> None:
    """Two meters polled every second, as a gateway sends them; then the same readings shuffled."""
    rng = random.Random(7)
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    for meter in ("m1", "m2"):
        imp, exp, rows = 1000.0, 50.0, []
        for second in range(3600):
            imp += rng.choice([0.0, rng.uniform(0, 0.01)])
            exp += rng.choice([0.0, 0.0, rng.uniform(0, 0.002)])
            rows.append((at(10) + second * 1000, imp, exp, rng.uniform(-3000, 20000)))
        series[meter] = rows

    def readings(first: int, last: int) -> list[Reading]:
        return [
            reading(ts, meter=meter, imp=imp, exp=exp, power_w=power)
            for meter, rows in series.items()
            for ts, imp, exp, power in rows[first:last]
        ]

    in_order = Ledger(ledger_at("in-order"))
    for second in range(0, 3600, 10):  # a batch every 10 s with both meters' readings
        in_order.ingest(batch(*readings(second, second + 10)))
    for meter, rows in series.items():
        got = intervals(in_order, meter)
        assert [(start, n) for start, *_, n in got] == [(at(10, m), 900) for m in (0, 15, 30, 45)]
        for (_, imp_kwh, exp_kwh, max_kw, _), first in zip(got, range(0, 3600, 900), strict=True):
            # Every bucket starts on a reading, so its energy is the counter's rise from that reading to
            # the next bucket's first (the last bucket ends at the last reading).
            last = min(first + 900, 3599)
            assert imp_kwh == pytest.approx(rows[last][1] - rows[first][1], rel=1e-9)
            assert exp_kwh == pytest.approx(rows[last][2] - rows[first][2], rel=1e-9)
            assert max_kw == max(power for _, _, _, power in rows[first : first + 900]) / 1000
        total = sum(imp for _, imp, *_ in got if imp is not None)
        assert total == pytest.approx(rows[-1][1] - rows[0][1], rel=1e-9)
        assert events(in_order, meter) == []
    shuffled = Ledger(ledger_at("shuffled"))
    late = readings(0, 3600)
    rng.shuffle(late)
    for start in range(0, len(late), 500):
        shuffled.ingest(batch(*late[start : start + 500]))
    for meter in series:
        assert_same_intervals(intervals(shuffled, meter), intervals(in_order, meter))


# The writer's fast path: a reading newer than everything stored of its meter only appends (no look-up),
# from what the ledger remembers in memory. These tests hold it to the general path's result.


def random_readings(seed: int, per_meter: int = 150) -> list[Reading]:
    """Two meters over a few days: polls 1 s to 20 min apart, now and then a gap of more than a day or a
    counter reset; export and power sometimes unreadable, import rarely."""
    rng = random.Random(seed)
    out = []
    for meter in ("m1", "m2"):
        ts, imp, exp = at(0) + rng.randint(0, 600_000), rng.uniform(0, 1000), rng.uniform(0, 50)
        for _ in range(per_meter):
            ts += rng.randint(25, 30) * 3_600_000 if rng.random() < 0.02 else rng.randint(1_000, 1_200_000)
            imp = rng.uniform(0, 1) if rng.random() < 0.03 else imp + rng.uniform(0, 2)
            exp = rng.uniform(0, 1) if rng.random() < 0.03 else exp + rng.choice([0.0, rng.uniform(0, 0.5)])
            out.append(
                reading(
                    ts,
                    meter=meter,
                    imp=imp if rng.random() > 0.05 else None,
                    exp=exp if rng.random() > 0.3 else None,
                    power_w=rng.uniform(-3000, 20000) if rng.random() > 0.2 else None,
                )
            )
    return out


def chunks(readings: list[Reading], rng: random.Random, most: int) -> list[list[Reading]]:
    out = []
    while readings:
        size = rng.randint(1, most)
        out.append(readings[:size])
        readings = readings[size:]
    return out


def everything(ledger: Ledger) -> dict[str, MeterState]:
    """All the ledger derives from readings, per meter: intervals, counter events, latest, meter row."""
    with ledger.reader() as r:
        return {
            meter: (
                [
                    (i.start_ms, i.energy_import_kwh, i.energy_export_kwh, i.max_kw, i.samples)
                    for i in r.intervals(meter, 0, 2**62)
                ],
                r.counter_events(meter),
                r.latest(meter),
                r.meter(meter),
                len(r.readings(meter, 0, 2**62)),
            )
            for meter in ("m1", "m2")
        }


def assert_same_ledgers(got: Ledger, want: Ledger) -> None:
    g, w = everything(got), everything(want)
    for meter in ("m1", "m2"):
        g_intervals, *g_rest = g[meter]
        w_intervals, *w_rest = w[meter]
        assert_same_intervals(g_intervals, w_intervals)
        assert g_rest == w_rest


@pytest.mark.parametrize("seed", range(4))
def test_appending_gives_what_the_general_path_gives_in_any_order_and_grouping(
    ledger_at: LedgerAt, seed: int
) -> None:
    rng = random.Random(seed)
    readings = sorted(random_readings(seed), key=lambda r: r.ts)
    # In order, batches of up to 40 readings: nearly every reading takes the append path.
    in_order = Ledger(ledger_at("in-order"))
    in_order_resets = sum(in_order.ingest(batch(*c)).counter_resets for c in chunks(readings, rng, 40))
    # The same, several batches per transaction, as the ingestor commits them.
    grouped = Ledger(ledger_at("grouped"))
    batches = [batch(*c) for c in chunks(readings, rng, 20)]
    for first in range(0, len(batches), 5):
        grouped.store(batches[first : first + 5], received_at=0)
    # In order, but a fresh Ledger (nothing remembered) for every batch: each state is loaded from the file.
    cold_path = ledger_at("cold")
    for c in chunks(readings, rng, 40):
        with Ledger(cold_path) as cold:
            cold.ingest(batch(*c))
    # Shuffled, small batches: mostly the general path (neighbour look-ups), with appends in between.
    shuffled = Ledger(ledger_at("shuffled"))
    late = readings.copy()
    rng.shuffle(late)
    shuffled_resets = sum(shuffled.ingest(batch(*c)).counter_resets for c in chunks(late, rng, 4))
    with Ledger(cold_path) as cold:
        for other in (grouped, cold, shuffled):
            assert_same_ledgers(other, in_order)
    resets = [e for m in ("m1", "m2") for e in events(in_order, m) if e.kind is CounterEventKind.RESET]
    assert in_order_resets == shuffled_resets == len(resets) > 0
    assert any(e.kind is CounterEventKind.GAP for m in ("m1", "m2") for e in events(in_order, m))


class _Crash(Exception):
    pass


@pytest.mark.parametrize("when", ["mid-group", "at-commit"])
def test_a_rolled_back_group_is_forgotten_by_the_writer_too(
    ledger_at: LedgerAt, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The readings of a group that failed are not stored, and the writer must not remember them as the
    newest of their meter: the next readings would take a phantom as their previous neighbour."""
    readings = sorted(random_readings(11), key=lambda r: r.ts)
    parts = chunks(readings, random.Random(3), 60)
    reference = Ledger(ledger_at("reference"))
    for part in parts:
        reference.ingest(batch(*part))

    ledger = Ledger(ledger_at("ledger"))
    for part in parts[:2]:
        ledger.ingest(batch(*part))
    real_flush = Ledger._flush

    def failing_flush(self: Ledger, db: Db) -> None:
        real_flush(self, db)
        raise sqlite3.OperationalError("disk I/O error")

    failing = batch(*parts[2])
    if when == "mid-group":
        group: list[Item] = [failing, RejectedMessage("t", "invalid_json", "d", b"x")]
        monkeypatch.setattr(
            "collector.store.ledger.Ledger._store_item", _crash_on_rejected(Ledger._store_item)
        )
    else:
        group = [failing]
        monkeypatch.setattr(Ledger, "_flush", failing_flush)
    with pytest.raises((_Crash, sqlite3.OperationalError)):
        ledger.store(group, received_at=0)
    monkeypatch.undo()
    with ledger.reader() as r:
        assert r.outbox_backlog() == (0, 0)
        stored = len(r.readings("m1", 0, 2**62)) + len(r.readings("m2", 0, 2**62))
    assert stored == len(parts[0]) + len(parts[1])
    # Later readings first (appending after what was really stored), then the lost group, late.
    for part in parts[3:]:
        ledger.ingest(batch(*part))
    assert ledger.ingest(failing).accepted == len(parts[2])
    assert_same_ledgers(ledger, reference)


StoreItem = Callable[[Ledger, Db, Item, int], IngestResult]
"""Ledger._store_item, as taken from the class."""


def _crash_on_rejected(store_item: StoreItem) -> StoreItem:
    def crash(self: Ledger, db: Db, item: Item, received_at: int) -> IngestResult:
        if isinstance(item, RejectedMessage):
            raise _Crash
        return store_item(self, db, item, received_at)

    return crash


def test_one_transaction_of_several_messages_leaves_what_one_per_message_leaves(ledger_at: LedgerAt) -> None:
    """latest and meters are upserted once per transaction: the message with a meter's newest reading
    says where it is, as if each message had been committed on its own (m1's 10:10 in the third message
    is a duplicate, its 10:12 the newest)."""
    messages = [
        batch(reading(at(10, 0), imp=1.0), reading(at(10, 5), meter="m2", imp=5.0)),
        batch(reading(at(10, 10), imp=2.0, power_w=3.0), site="site2", gateway="gw2"),
        batch(
            reading(at(10, 10), imp=9.0),
            reading(at(10, 12), imp=2.5),
            reading(at(9), meter="m2", imp=4.0),
            site="site3",
        ),
        batch(reading(at(10, 7), imp=1.5), reading(at(10, 4), meter="m2", imp=4.5), gateway="gw4"),
    ]
    one_by_one = Ledger(ledger_at("one"))
    results = [one_by_one.ingest(m) for m in messages]
    together = Ledger(ledger_at("together"))
    assert together.store(messages, received_at=0) == results
    assert_same_ledgers(together, one_by_one)
    with together.reader() as r:
        m1 = r.meter("m1")
        latest = r.latest("m1")
    assert m1 is not None
    assert latest is not None
    assert (m1.site, m1.gateway, m1.first_seen, m1.last_seen) == ("site3", "gw1", at(10, 0), at(10, 12))
    assert latest.values == {"energy_import_kwh": 2.5}


def test_legacy_unsynced_rows_are_not_a_counters_newest_sample(ledger_at: LedgerAt) -> None:
    """Ledgers written before quarantine hold unsynchronised readings; what the writer loads from the file
    must skip them as the neighbour look-ups do."""
    path = ledger_at("ledger")
    with Ledger(path) as ledger:
        ledger.ingest(batch(reading(at(10, 0), imp=10.0)))
        ledger._db.execute(
            "INSERT INTO readings SELECT id, ?, 99.0, NULL, NULL, NULL, NULL, 'unsynced' FROM meter_keys"
            " WHERE meter_id = 'm1'",
            (at(10, 20),),
        )
    with Ledger(path) as ledger:
        ledger.ingest(batch(reading(at(10, 10), imp=10.5)))  # before the unsynced one: loads the state
        ledger.ingest(batch(reading(at(10, 30), imp=11.0)))  # after it: appends to the state
    assert events(Ledger(path)) == []
    assert [(imp, n) for _, imp, _, _, n in intervals(Ledger(path))] == [
        (pytest.approx(0.5 + 0.125), 2),
        (pytest.approx(0.375), 0),
        (None, 1),
    ]


def test_values_json_is_what_json_dumps_writes() -> None:
    rng = random.Random(5)
    for _ in range(200):
        values = {
            name: rng.choice([rng.uniform(-1e6, 1e6), float(rng.randint(-5, 5)), rng.random() * 1e-300, -0.0])
            for name in rng.sample(sorted(QUANTITIES), rng.randint(0, 12))
        }
        assert values_json(formatted_values(values)) == json.dumps(values)
    assert all(json.dumps(name) == f'"{name}"' for name in QUANTITIES)  # nothing to escape
