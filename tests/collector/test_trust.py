"""What the ledger believes of a reading (issue 16): its time within the window, its meter bound to the
gateway that sends it, its counters rising no faster than the meter can, a seq that jumps or starts late
reported; and the API stays up whatever got in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from collector.api.app import create_app
from collector.cli import app as collector_cli
from collector.intervals import STEP_SLACK_KWH
from collector.metrics import CollectorMetrics
from collector.store import (
    BadValue,
    CollectorEventKind,
    IngestChecks,
    Ledger,
    LedgerReader,
    QuarantineReason,
    ReadingRejection,
    ReadingRow,
)
from kilowatch.mqtt_contract import INT64_MAX, GatewayEvent, GatewayStatus, Quality, Reading, ReadingsBatch
from kilowatch.timebase import SLOT_MS
from tests.api_support import api_client
from tests.collector_support import at, batch, reading
from tests.ledger_support import LedgerAt, ledger_settings

NOW = at(12)
"""When every message of these tests is received."""
CHECKS = IngestChecks(max_kw={"m1": 100.0})


@pytest.fixture
def ledger(ledger_at: LedgerAt) -> Ledger:
    return Ledger(ledger_at("kilowatch"), checks=CHECKS)


@pytest.fixture
async def client(ledger: Ledger) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ledger=ledger.where, metrics=CollectorMetrics(), mqtt_connected=lambda: True)
    async with api_client(app, ledger.where) as client:
        yield client


def spooled(*readings: Reading, seq: int, gateway: str = "gw1") -> ReadingsBatch:
    return batch(*readings, seq=seq, gateway=gateway).model_copy(update={"spool_id": "5b001001"})


def ingest(ledger: Ledger, message: ReadingsBatch) -> None:
    ledger.store([message], received_at=NOW)


def test_a_reading_from_the_future_is_quarantined_and_pins_nothing(ledger: Ledger) -> None:
    year_2100 = 4_102_444_800_000
    [early, future, late] = ledger.store(
        [
            batch(reading(at(11), imp=10.0)),
            batch(reading(year_2100, imp=11.0)),
            batch(reading(at(11, 1), imp=10.1)),
        ],
        received_at=NOW,
    )
    assert future.quarantined == {QuarantineReason.IMPLAUSIBLE_TIME: 1}
    assert (early.accepted, future.accepted, late.accepted) == (1, 0, 1)
    assert late.counter_resets == 0
    with LedgerReader(ledger.where) as reader:
        latest = reader.latest("m1")
        assert latest is not None
        assert latest.ts == at(11, 1)
        assert reader.quarantine_counts() == {QuarantineReason.IMPLAUSIBLE_TIME: 1}
        assert reader.counter_events("m1") == []


def test_a_bad_first_time_of_a_boot_does_not_become_its_clock_reference(ledger: Ledger) -> None:
    boot = "0f3a9c1e-5b7d-4a64-9e2b-1c2d3e4f5a6b"
    year_2100 = 4_102_444_800_000
    first = reading(year_2100, imp=1.0).model_copy(update={"mono_ms": 1_000})
    real = reading(at(11), imp=1.0).model_copy(update={"mono_ms": 61_000})
    [result] = ledger.store([batch(first, real).model_copy(update={"boot_id": boot})], received_at=NOW)
    assert (result.accepted, result.clock_stepped) == (1, 0)
    assert result.quarantined == {QuarantineReason.IMPLAUSIBLE_TIME: 1}
    with LedgerReader(ledger.where) as reader:
        latest = reader.latest("m1")
        assert latest is not None
        assert latest.ts == at(11)


@pytest.mark.parametrize("ts", [INT64_MAX, 253_402_300_800_000, at(12) - 401 * 86_400_000])
async def test_times_outside_the_window_never_break_the_api(
    ledger: Ledger, client: httpx.AsyncClient, ts: int
) -> None:
    ingest(ledger, batch(reading(ts, imp=1.0)))
    ingest(ledger, batch(reading(at(11), imp=1.0)))
    for path in ("/api/v1/meters", "/api/v1/meters/m1/latest", "/api/v1/quarantine"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
    assert (await client.get("/api/v1/meters/m1/latest")).json()["ts"] == "2024-05-01T11:00:00Z"


async def test_a_ledger_written_before_the_window_never_breaks_the_api(ledger_at: LedgerAt) -> None:
    """A ledger from before the window (here: one written without checks) may hold a time past 9999."""
    with Ledger(ledger_at("old")) as old:
        old.ingest(batch(reading(INT64_MAX, imp=1.0)))
    app = create_app(ledger=ledger_at("old"), metrics=CollectorMetrics(), mqtt_connected=lambda: True)
    async with api_client(app, ledger_at("old")) as client:
        [meter] = (await client.get("/api/v1/meters")).json()
        assert (meter["first_seen"], meter["last_seen"]) == (None, None)
        assert (await client.get("/api/v1/meters/m1/latest")).json()["ts"] is None


async def test_a_gateway_clock_past_year_9999_never_breaks_the_api(
    ledger: Ledger, client: httpx.AsyncClient
) -> None:
    common = {"schema_version": 1, "site": "site1", "gateway": "gw1", "ts": INT64_MAX}
    status = GatewayStatus.model_validate({**common, "state": "online", "agent_version": "1"})
    event = GatewayEvent.model_validate(
        {**common, "kind": "spool_evicted", "readings": 1, "oldest_ts": INT64_MAX, "detail": "x"}
    )
    ledger.store([status, event], received_at=NOW)
    [gateway] = (await client.get("/api/v1/gateways")).json()
    assert gateway["ts"] is None
    [shown] = (await client.get("/api/v1/gateways/events")).json()
    assert (shown["ts"], shown["oldest_ts"], shown["kind"]) == (None, None, "spool_evicted")


async def test_a_counter_rising_faster_than_its_meter_can_is_a_bad_value_not_energy(
    ledger: Ledger, client: httpx.AsyncClient
) -> None:
    """m1 can draw 100 kW: 1.67 kWh a minute. A jump of 5e11 kWh (within the physical range, so the
    agent sends it) is kept as a bad value with its reason and books nothing; 1e300 (outside) arrives bad."""
    results = [
        ledger.store([batch(reading(at(11, minute), imp=value))], received_at=NOW)[0]
        for minute, value in enumerate([100.0, 101.0, 5e11, 102.0, 1e300, 103.0])
    ]
    assert [sum(r.bad_values.values()) for r in results] == [0, 0, 1, 0, 1, 0]
    assert results[2].bad_values == {BadValue.COUNTER_STEP: 1}
    assert results[4].bad_values == {BadValue.OUT_OF_RANGE: 1}
    with LedgerReader(ledger.where) as reader:
        [interval] = reader.intervals("m1", at(11), at(12))
        assert interval.energy_import_kwh == pytest.approx(3.0)
        assert reader.counter_events("m1") == []
    latest = (await client.get("/api/v1/meters/m1/latest")).json()
    assert latest["values"] == {"energy_import_kwh": 103.0}
    at_jump = [r for r in _stored(ledger) if r.ts == at(11, 2)]
    assert [(r.quality, r.values) for r in at_jump] == [(Quality.BAD, {})]


async def test_bad_values_are_served_with_their_reasons(ledger: Ledger, client: httpx.AsyncClient) -> None:
    ingest(ledger, batch(reading(at(11), imp=100.0)))
    ingest(ledger, batch(reading(at(11, 1), imp=9e99, power_w=250.0)))
    latest = (await client.get("/api/v1/meters/m1/latest")).json()
    assert latest["quality"] == "bad"
    assert latest["values"] == {"active_power_w": 250.0}
    assert latest["value_quality"] == {"energy_import_kwh": "bad"}
    assert "outside the physical range" in latest["value_reasons"]["energy_import_kwh"]


def test_a_replaced_meter_is_taken_up_once_it_counts_plausibly(ledger: Ledger) -> None:
    """A counter that jumps and then goes on counting from there is a new meter (or a re-based register):
    one refused reading, then a reset; its energy from then on is booked."""
    for minute, value in enumerate([100.0, 101.0, 80_000.0, 80_001.0, 80_002.0]):
        ingest(ledger, batch(reading(at(11, minute), imp=value)))
    with LedgerReader(ledger.where) as reader:
        [interval] = reader.intervals("m1", at(11), at(12))
        assert interval.energy_import_kwh == pytest.approx(2.0)
        [event] = reader.counter_events("m1")
        assert (event.kind.value, event.prev_value, event.value) == ("reset", 101.0, 80_001.0)


def test_no_interval_exceeds_what_the_meter_can_deliver(ledger: Ledger) -> None:
    """Whatever values arrive, no 15-minute interval holds more than max_kw allows (plus the slack)."""
    values = [100.0, 3e9, 100.5, 1e11, 7.0, 101.0, 4e5, 102.0, 102.5, 9e8, 103.0]
    for minute, value in enumerate(values):
        ingest(ledger, batch(reading(at(11, minute * 2), imp=value)))
    with LedgerReader(ledger.where) as reader:
        for interval in reader.intervals("m1", at(10), at(13)):
            bound = 100.0 * SLOT_MS / 3_600_000 + STEP_SLACK_KWH * interval.samples
            assert (interval.energy_import_kwh or 0.0) <= bound


def test_a_meter_is_bound_to_the_gateway_it_was_first_seen_from(ledger: Ledger) -> None:
    ingest(ledger, batch(reading(at(11), meter="m2", imp=5.0), gateway="gw-02"))
    [spoof] = ledger.store(
        [batch(reading(at(11, 1), meter="m2", imp=2_000_000.0), gateway="gw-01")], received_at=NOW
    )
    assert spoof.accepted == 0
    assert spoof.rejected_readings == {ReadingRejection.FOREIGN_METER: 1}
    with LedgerReader(ledger.where) as reader:
        meter = reader.meter("m2")
        assert meter is not None
        assert meter.gateway == "gw-02"
        [event] = reader.gateway_events()
        assert (event.gateway, event.kind, event.readings) == ("gw-01", CollectorEventKind.FOREIGN_METER, 1)
        assert "m2 (bound to site1/gw-02)" in event.detail


def test_a_provisioned_meter_takes_readings_from_its_gateway_only(ledger_at: LedgerAt) -> None:
    checks = IngestChecks(provisioned={"m1": ("site1", "gw-02"), "m3": ("site2", None)})
    with Ledger(ledger_at("kilowatch"), checks=checks) as ledger:
        [first, other_site, own] = ledger.store(
            [
                batch(reading(at(11), meter="m1", imp=1.0), gateway="gw-01"),
                batch(reading(at(11), meter="m3", imp=1.0), gateway="gw-01"),
                batch(reading(at(11), meter="m1", imp=1.0), gateway="gw-02"),
            ],
            received_at=NOW,
        )
    assert first.rejected_readings == {ReadingRejection.FOREIGN_METER: 1}
    assert other_site.rejected_readings == {ReadingRejection.FOREIGN_METER: 1}
    assert own.accepted == 1


def test_move_meter_rebinds_and_is_kept_as_an_event(ledger: Ledger, tmp_path: Path) -> None:
    ingest(ledger, batch(reading(at(11), meter="m2", imp=5.0), gateway="gw-02"))
    config = tmp_path / "collector.yaml"
    config.write_text(json.dumps({"ledger": ledger_settings(ledger.where)}))  # JSON is YAML
    result = CliRunner().invoke(collector_cli, ["move-meter", "m2", "--to", "site1/gw-01", "-c", str(config)])
    assert result.exit_code == 0, result.output
    [moved] = ledger.store([batch(reading(at(11, 1), meter="m2", imp=5.5), gateway="gw-01")], received_at=NOW)
    assert moved.accepted == 1
    [old_gateway] = ledger.store(
        [batch(reading(at(11, 2), meter="m2", imp=6.0), gateway="gw-02")], received_at=NOW
    )
    assert old_gateway.rejected_readings == {ReadingRejection.FOREIGN_METER: 1}
    with LedgerReader(ledger.where) as reader:
        kinds = [(e.gateway, e.kind) for e in reader.gateway_events()]
    assert ("gw-01", CollectorEventKind.METER_MOVED) in kinds
    bad = CliRunner().invoke(collector_cli, ["move-meter", "m2", "--to", "nogateway", "-c", str(config)])
    assert bad.exit_code == 2


def test_a_seq_jump_is_a_new_numbering_and_a_late_first_seq_a_gap(ledger: Ledger) -> None:
    [late_start] = ledger.store([spooled(reading(at(11), imp=1.0), seq=30)], received_at=NOW)
    assert late_start.missing_batches == 30
    [jump] = ledger.store([spooled(reading(at(11, 1), imp=1.0), seq=10**15)], received_at=NOW)
    assert jump.missing_batches == 0
    assert jump.seq_jump is not None
    assert jump.accepted == 1
    with LedgerReader(ledger.where) as reader:
        assert reader.missing_batches() == 30
        [gap] = reader.seq_gaps()
        assert (gap.first_seq, gap.last_seq) == (0, 29)
        [event] = reader.gateway_events()
        assert event.kind is CollectorEventKind.SPOOL_EPOCH
        assert f"seq {10**15} follows 30" in event.detail


def test_a_first_seq_beyond_the_bound_is_an_event_not_a_gap(ledger: Ledger) -> None:
    [first] = ledger.store([spooled(reading(at(11), imp=1.0), seq=10**15)], received_at=NOW)
    assert (first.missing_batches, first.accepted) == (0, 1)
    with LedgerReader(ledger.where) as reader:
        assert reader.missing_batches() == 0
        [event] = reader.gateway_events()
        assert "is its first" in event.detail


def _stored(ledger: Ledger) -> list[ReadingRow]:
    with LedgerReader(ledger.where) as reader:
        return list(reader.readings("m1", 0, 2**62))
