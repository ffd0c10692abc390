"""Leases: which replica of a shared PostgreSQL ledger does a job that must run once (judge a site, drain the
TSDB outbox, send notifications, prune), and the locks that serialise two replicas' writes of one gateway.

A lease is a PostgreSQL session-level advisory lock held on a connection of its own. The server releases it
when that session ends, however the replica died (a SIGKILL closes the socket; a host that vanishes is
noticed by TCP keepalives), so another replica takes the job over at its next try, with nothing to expire
or renew. Lock keys are (namespace, 32-bit hash of the name): a hash clash only makes two names share a lock.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable

import psycopg

from collector.store.connection import Postgres

log = logging.getLogger(__name__)

LEASES = 0x6B776C31  # "kwl1": a replica's leases
WRITES = 0x6B777731  # "kww1": a transaction's gateways and meters
PRESENT = 0x6B777031  # "kwp1": held shared by every replica's lease connection, to count them
CONNECT_TIMEOUT_S = 10
KEEPALIVE_S = 10
"""TCP keepalive idle/interval on the lease connection: a server that vanished is noticed within ~30 s, and
the server notices a replica's host gone as quickly (it releases the leases then)."""


def lock_key(name: str) -> int:
    """A name's 32-bit lock key (signed, as PostgreSQL's int4)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True)


WRITE_LOCKS = (
    f"SELECT count(*) FROM (SELECT pg_advisory_xact_lock({WRITES}, k) FROM unnest(?::int4[]) AS k) AS locked"  # noqa: S608 - a constant
)
"""Takes a transaction's write locks, held until it ends, in the order of the sorted keys given (as
:func:`write_lock_keys` makes them): two transactions wanting the same keys queue instead of deadlocking."""


_PRESENT_COUNT = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid AND objid = 0"
    " AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
"""How many replicas' lease connections are open on this database (each holds PRESENT, shared)."""


def write_lock_keys(gateways: Iterable[tuple[str, str]], meters: Iterable[str]) -> list[int]:
    """The sorted write-lock keys of (site, gateway) pairs and meters: what one transaction changes of each
    gateway's delivery and clock bookkeeping and of each meter's readings, intervals and latest values."""
    names = {f"gateway\0{site}\0{gateway}" for site, gateway in gateways} | {f"meter\0{m}" for m in meters}
    return sorted({lock_key(name) for name in names})


class Leases:
    """This replica's leases, on a PostgreSQL connection of their own (autocommit). Its methods block: async
    callers run them on a thread (they are serialised by a lock)."""

    def __init__(self, where: Postgres) -> None:
        self._where = where
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._held:
                log.warning("leases lost with their connection: %s", ", ".join(sorted(self._held)))
            self._held.clear()
            self._conn = psycopg.connect(
                self._where.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="kilowatch-collector-leases",
                keepalives=1,
                keepalives_idle=KEEPALIVE_S,
                keepalives_interval=KEEPALIVE_S,
                keepalives_count=2,
            )
            self._conn.execute("SELECT pg_advisory_lock_shared(%s, 0)", (PRESENT,))
        return self._conn

    def claim(self, names: Iterable[str], *, shared_out: bool = False) -> set[str]:
        """Take the leases of `names` that no other replica holds; returns those of `names` this replica
        holds now. `shared_out`: hold at most this replica's share of `names` (their number over the replicas
        present, rounded up), giving up any over it for the others to take at their next claim. A lost
        connection loses every lease (the server released them): it is opened again and they are tried again;
        a server that cannot be reached holds none (psycopg's error is raised)."""
        wanted = set(names)
        with self._lock:
            try:
                conn = self._connection()
                row = conn.execute(_PRESENT_COUNT, (PRESENT,)).fetchone()  # the session is still there
                present = row[0] if row is not None and isinstance(row[0], int) else 1
                most = -(-len(wanted) // max(1, present)) if shared_out else len(wanted)
                for name in sorted(self._held & wanted)[most:]:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LEASES, lock_key(name)))
                    self._held.discard(name)
                    log.info("gave up %s: over this replica's share, for another to take", name)
                for name in sorted(wanted - self._held):
                    if len(self._held & wanted) >= most:
                        break
                    row = conn.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (LEASES, lock_key(name))
                    ).fetchone()
                    if row is not None and row[0]:
                        self._held.add(name)
            except psycopg.Error:
                self._close()
                raise
            return self._held & wanted

    def holds(self, name: str) -> bool:
        return name in self._held

    def close(self) -> None:
        """Close the connection: every lease is released."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._held.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
