"""Replicas on one PostgreSQL ledger, in process: two shared writers committing one gateway's batches at the
same time, in any order, give what one writer gives; a lease is held by one replica at a time and passes to
another when its holder's session ends."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from app.processes import PostgreSQL
from collector.store import Ledger, LedgerReader, Location, Postgres
from collector.store.leases import Leases
from kilowatch.mqtt_contract import ReadingsBatch
from sim.generate import Run
from sim.scenario import load_scenario
from tests.collector.test_detect_live import SCENARIO
from tests.ledger_support import LedgerAt, ledgers, terminate_backends

pytestmark = pytest.mark.services


@pytest.fixture
def pg_ledger_at(tmp_path: Path, postgresql_if: Callable[[], PostgreSQL]) -> Iterator[LedgerAt]:
    with ledgers("postgresql", tmp_path, postgresql_if) as ledger_at:
        yield ledger_at


def scenario_batches(tmp_path: Path, days: int = 2) -> list[ReadingsBatch]:
    """The live detection test's office at 1-minute, Friday on (its after-hours waste is on the third day)."""
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    spec = load_scenario(path)
    run = Run(spec, start=spec.start, days=days, interval_s=60)
    return [
        ReadingsBatch.model_validate_json(line).model_copy(update={"spool_id": "5900100f"})  # as an agent's
        for site, gateway in sorted(run.gateways)
        for line in run.batches(site, gateway)
    ]


def kwh(energy: float | None) -> float | None:
    """Energy to the nanowatt-hour: a step taken out and put back in another order differs in its last bits."""
    return None if energy is None else round(energy, 9)


def books(where: Location) -> tuple[object, ...]:
    """What the ledger's books say of each meter: readings, 15-minute intervals, latest, counter events; and
    the gateway's batches and gaps."""
    with LedgerReader(where) as reader:
        meters = sorted(m.meter_id for m in reader.meters())
        return (
            meters,
            [len(reader.readings(m, 0, 2**62)) for m in meters],
            [
                [
                    (i.start_ms, kwh(i.energy_import_kwh), kwh(i.energy_export_kwh), i.max_kw, i.samples)
                    for i in reader.intervals(m, 0, 2**62)
                ]
                for m in meters
            ],
            [reader.latest(m) for m in meters],
            [reader.counter_events(m) for m in meters],
            reader.stored_batches(),
            reader.missing_batches(),
        )


def run_together(threads: list[threading.Thread]) -> None:
    """Start every thread, then wait for them all."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_two_shared_writers_of_one_gateway_keep_the_books_one_writer_keeps(
    tmp_path: Path, pg_ledger_at: LedgerAt
) -> None:
    batches = scenario_batches(tmp_path)
    single = Ledger(pg_ledger_at("single"))
    try:
        for batch in batches:
            single.ingest(batch, received_at=batch.sent_at)
    finally:
        single.close()

    # Two replicas take the same gateway's batches as a shared subscription hands them out: alternately,
    # in groups, each committing as fast as it can, so that commits interleave and overtake each other.
    shared = pg_ledger_at("shared")
    writers = [Ledger(shared, shared=True), Ledger(shared, shared=True)]
    shares: list[list[ReadingsBatch]] = [[], []]
    rng = random.Random(20261207)
    for batch in batches:
        shares[rng.randrange(2)].append(batch)
    failures: list[BaseException] = []

    def write(ledger: Ledger, share: list[ReadingsBatch]) -> None:
        try:
            for start in range(0, len(share), 7):
                group = share[start : start + 7]
                ledger.store(group, received_at=group[-1].sent_at)
        except BaseException as exc:
            failures.append(exc)

    run_together([threading.Thread(target=write, args=(w, s)) for w, s in zip(writers, shares, strict=True)])
    for writer in writers:
        writer.close()
    assert not failures, failures
    assert all(len(share) > 100 for share in shares)
    assert books(shared) == books(pg_ledger_at("single"))


def test_a_lease_is_held_by_one_replica_and_passes_on_when_its_session_ends(
    pg_ledger_at: LedgerAt, postgresql_if: Callable[[], PostgreSQL]
) -> None:
    where = pg_ledger_at("leases")
    assert isinstance(where, Postgres)
    Ledger(where).close()  # the database exists and is at the current schema
    a, b = Leases(where), Leases(where)
    try:
        assert a.claim(["site:office", "tsdb-writer"]) == {"site:office", "tsdb-writer"}
        assert b.claim(["site:office", "tsdb-writer", "site:plant"]) == {"site:plant"}
        assert a.claim(["site:office", "site:plant"]) == {"site:office"}
        # Both sessions end (the processes killed, a failover): the server released their leases. Each
        # replica learns it at its next claim, which holds nothing; the one after takes what is free.
        terminate_backends(postgresql_if(), where.url.rsplit("/", 1)[1])
        for replica in (a, b):
            with pytest.raises(psycopg.OperationalError):
                replica.claim(["tsdb-writer"])
        assert b.claim(["tsdb-writer"]) == {"tsdb-writer"}
        assert a.claim(["tsdb-writer", "site:office"]) == {"site:office"}
    finally:
        a.close()
        b.close()


def test_sites_are_shared_out_between_the_replicas_present(pg_ledger_at: LedgerAt) -> None:
    where = pg_ledger_at("shares")
    assert isinstance(where, Postgres)
    Ledger(where).close()
    sites = [f"site:{i}" for i in range(6)]
    a, b, c = Leases(where), Leases(where), Leases(where)
    try:
        assert a.claim(sites, shared_out=True) == set(sites)  # alone: every site
        assert b.claim(sites, shared_out=True) == set()  # a second replica: a holds them all
        assert len(a.claim(sites, shared_out=True)) == 3  # a gives up what is over its share
        assert len(b.claim(sites, shared_out=True)) == 3  # and b takes it
        assert c.claim(sites, shared_out=True) == set()  # a third
        counts = [len(r.claim(sites, shared_out=True)) for r in (a, b, c)]
        assert counts == [2, 2, 2]
        assert a.claim(["tsdb-writer"]) == {"tsdb-writer"}  # other leases are not shared out
        c.close()  # a replica gone: the others take its share at their next claim
        held = [a.claim(sites, shared_out=True), b.claim(sites, shared_out=True)]
        assert [len(h) for h in held] == [3, 3]
        assert held[0] | held[1] == set(sites)
    finally:
        a.close()
        b.close()
        c.close()


def open_together(where: Location, replicas: int) -> list[BaseException]:
    """Open `replicas` shared writers of `where` at the same moment; what they raised."""
    start = threading.Barrier(replicas)
    opened: list[Ledger] = []
    failures: list[BaseException] = []

    def open_ledger() -> None:
        start.wait()
        try:
            opened.append(Ledger(where, shared=True))
        except BaseException as exc:
            failures.append(exc)

    run_together([threading.Thread(target=open_ledger) for _ in range(replicas)])
    for ledger in opened:
        ledger.close()
    return failures


def test_replicas_starting_together_on_an_empty_database_make_the_ledger_once(pg_ledger_at: LedgerAt) -> None:
    for attempt in range(3):
        assert open_together(pg_ledger_at(f"empty-{attempt}"), 4) == []
