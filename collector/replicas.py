"""Jobs that run on one replica at a time, when several collectors share a PostgreSQL ledger.

Ingestion is shared (each replica commits the messages the broker gives it); draining the TSDB outbox,
sending notifications and retention run where this replica holds their lease, and each site is judged by the
replica holding the site's lease (:class:`SiteLeases`). A replica that dies loses its leases with its
database session; another takes each over at its next try, every :data:`LEASE_RETRY_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from collector.store import DatabaseError
from collector.store.leases import Leases

log = logging.getLogger(__name__)

LEASE_RETRY_S = 10.0
"""How often a replica tries to take the leases no replica holds, and checks that it still holds its own:
a dead replica's jobs are taken over within this (plus the server noticing the death: at once for a killed
process, whose socket the kernel closes)."""


async def claim(leases: Leases, names: Iterable[str], *, shared_out: bool = False) -> set[str]:
    """The leases of `names` this replica holds after trying to take the others (`shared_out`: at most its
    share, see :meth:`Leases.claim`); none while the database cannot be reached (logged)."""
    try:
        return await asyncio.to_thread(leases.claim, list(names), shared_out=shared_out)
    except DatabaseError as exc:
        log.warning("leases: the ledger cannot be reached (%s); this replica holds none until it can", exc)
        return set()


async def while_held(leases: Leases, name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run `run` while this replica holds lease `name`: wait for the lease, run the job, and cancel it if the
    lease is lost (then wait for it again). Returns or raises as the job does."""
    while True:
        if name not in await claim(leases, [name]):
            await asyncio.sleep(LEASE_RETRY_S)
            continue
        log.info("this replica now runs %s", name)
        job = asyncio.ensure_future(run())
        try:
            while not job.done():
                await asyncio.wait({job}, timeout=LEASE_RETRY_S)
                if not job.done() and name not in await claim(leases, [name]):
                    log.warning("this replica lost the lease of %s; another may run it now", name)
                    break
            else:
                return job.result()
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job


class SiteLeases:
    """Which sites this replica judges: at each detection pass and between passes, every
    :data:`LEASE_RETRY_S`, its share of the sites (their number over the replicas present, rounded up), taken
    from those no replica holds; it gives up any over its share when another replica starts."""

    def __init__(self, leases: Leases, sites: Iterable[str]) -> None:
        self._leases = leases
        self._names = {f"site:{site}": site for site in sites}

    async def claim(self) -> set[str]:
        held = await claim(self._leases, self._names, shared_out=True)
        return {self._names[name] for name in held}
