"""The detectors, live: a task of the collector that judges each configured meter on the ledger's readings.

Every pass (``detection.interval_s``) looks at each meter named in the detection settings file. A meter is
judged again only when something changed: a new 15-minute interval of it is complete, late data filled in
its past, or it fell silent. Its series is rebuilt from the ledger every time, in event time, over the
judged span (``catch_up_days``) plus the history its baselines learn from (``history_days``), so a
restart, a backlog flushed after an outage and live data all give the same findings: nothing the
detectors know lives only in memory. The judged span ends at the meter's *data horizon*, the end of its
last complete interval, never at the wall clock: a meter whose data stops is not judged across the gap
(an episode under way stays open rather than being cleared by missing data; nor is it judged while its
gateway's batches have a gap not yet filled: see ``gap_wait_s``), and once it has been
silent for more than ``silent_polls`` polls a ``no_data`` finding says so; it resolves when readings
come back. Spans in which a gateway's clock had stepped (the ledger's ``clock_steps``) are reported as
``untrusted_clock`` on ``<site>/<gateway>``, and a gateway whose last will arrived as ``gateway_offline``
(its meters are then not also called silent).

Findings go to :meth:`Notifications.submit` (the alert store decides opened/updated/resolved, marks an
alert raised late when its ``detected_at`` is old, and queues notifications); one already applied
unchanged by this process is not applied again. The reading and the detectors run on a worker thread
with a read-only connection of their own, so ingestion is never held up.

With replicas (``sites_held``), a process judges only the sites whose lease it holds, asked before each pass
and every :data:`~collector.replicas.LEASE_RETRY_S` between passes (a pass starts at once for a site taken
over). A site it gains or loses is judged as after a restart: from the ledger, over the whole judged span;
the alert store keeps what the other replica applied, so nothing is raised twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from collector.alerts import AlertChange, Clock, wall_clock_ms
from collector.config import DetectionSettings
from collector.detectors.common import Context, Episode
from collector.detectors.config import Sites
from collector.detectors.findings import Detector, Finding
from collector.detectors.run import DETECTORS_BY_ROLE, detect_meter
from collector.detectors.series import Series
from collector.metrics import CollectorMetrics
from collector.store import DatabaseError, LedgerReader, Location
from collector.store.connection import location
from kilowatch.calendars import DECISION_963_2026
from kilowatch.mqtt_contract import GatewayState
from kilowatch.timebase import DAY_MS, bucket_start, day_start_ms, local_datetime, local_day

log = logging.getLogger(__name__)

FindingKey = tuple[str, Detector, str, int]
"""(meter, detector, rule, start_ms): one occurrence of a condition."""


@dataclass(frozen=True)
class Meter:
    """A configured meter and what it is judged by."""

    ctx: Context

    @property
    def poll_ms(self) -> int:
        return round(self.ctx.site_config.poll_s * 1000)


@dataclass
class _Seen:
    """What the last pass saw of a meter, and the findings applied since this process started."""

    fingerprint: tuple[int, int, bool] | None = None
    """(data horizon, readings in the window, silent) of the last judgement."""
    applied: dict[FindingKey, Finding] = field(default_factory=dict)
    judged_until: int | None = None
    """The data horizon of the last judgement: the next one judges from there at the latest, however far
    the data moved on in between (a backlog flushed faster than the passes)."""
    judged_before: int | None = None
    """`judged_until` before the last judgement, restored if its findings could not all be applied."""


@dataclass(frozen=True)
class PassReport:
    meters: int
    judged: int
    findings: list[Finding]
    seconds: float
    not_raised: int = 0
    """Findings older than the span judged (history read for baselines at the first judgement of a meter
    by this process), or older than ``catch_up_days`` at a site that asked not to be told of those."""


def configured_meters(sites: Sites) -> list[Meter]:
    return [
        Meter(Context(site_id, meter_id, meter, site))
        for site_id, site in sites.sites.items()
        for meter_id, meter in site.meters.items()
    ]


class LiveDetection:
    """Judges the configured meters on the ledger in `path`; see the module docstring.

    Args:
        where: The ledger (a SQLite file or a PostgreSQL database; opened read-only).
        sites: Who is judged and by which settings.
        settings: Pass interval and the spans read.
        clock: Wall-clock time, UTC ms (only to tell a silent meter and to ignore readings from the future);
            with ``settings.clock`` "data", the newest reading of the meter's gateway stands in for it.
        metrics: Where passes, judged meters and applied findings are counted.
        sites_held: With replicas: claims the sites' leases, returns those this process holds.
        retry_s: With replicas: how often sites are claimed between passes.
    """

    def __init__(
        self,
        where: Path | str | Location,
        sites: Sites,
        settings: DetectionSettings,
        *,
        clock: Clock = wall_clock_ms,
        metrics: CollectorMetrics | None = None,
        sites_held: Callable[[], Awaitable[set[str]]] | None = None,
        retry_s: float = 10.0,
    ) -> None:
        self._where = location(where)
        self._sites_held = sites_held
        self._retry_s = retry_s
        self._held: set[str] | None = None
        """The sites this process judges (None: every site, no replicas)."""
        self.sites = sites
        self._metrics = metrics
        self._meters = configured_meters(sites)
        self._settings = settings
        self._clock = clock
        self._by_site: dict[str, list[Meter]] = {}
        for meter in self._meters:
            self._by_site.setdefault(meter.ctx.site, []).append(meter)
        unconfirmed = [site_id for site_id, site in sites.sites.items() if site.calendar.tou_unconfirmed]
        if unconfirmed:
            log.warning(
                "%d sites (%s) have not confirmed calendar.tou_2026_from: their time-of-use bands switch to "
                "%s on the assumed %s", len(unconfirmed), ", ".join(unconfirmed[:10]) + (", ..." if len(unconfirmed) > 10 else ""),
                DECISION_963_2026.name, DECISION_963_2026.effective_from,
            )  # fmt: skip
        self._seen: dict[str, _Seen] = {m.ctx.meter: _Seen() for m in self._meters}
        self._gateway_findings: dict[FindingKey, Finding] = {}
        """Gateway findings (clock steps, offline) applied by this process."""
        self._reader: LedgerReader | None = None
        self._not_raised = 0
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def meters(self) -> list[Meter]:
        return list(self._meters)

    def _connection(self) -> LedgerReader:
        if self._reader is None:
            self._reader = LedgerReader(self._where)
        return self._reader

    def close(self) -> None:
        """Close the connection; a pass under way stops at its next meter first."""
        self._stopping = True
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._stopping = False

    def scan(self) -> PassReport:
        """Judge every meter whose data changed; the findings not yet applied, in event-time order per
        meter. Synchronous and CPU-bound: run it on a thread."""
        started = time.perf_counter()
        findings: list[Finding] = []
        with self._lock:
            db = self._connection()
            judged_meters: list[str] = []
            self._not_raised = 0
            with db.snapshot():  # one snapshot per pass
                try:
                    awaiting = self._awaiting(db)
                    by_data = self._settings.clock == "data"
                    gateway_of = db.meter_gateways() if by_data or awaiting else {}
                    nows = self._data_clocks(db, gateway_of) if by_data else {}
                    now = max(nows.values(), default=0) if nows else self._clock()
                    offline = db.offline_meters()
                    for meter in self._meters:
                        if self._stopping:
                            break
                        if self._held is not None and meter.ctx.site not in self._held:
                            continue
                        if gateway_of.get(meter.ctx.meter) in awaiting:
                            continue
                        fresh = self._judge(
                            db, meter, nows.get(meter.ctx.meter, now), meter.ctx.meter in offline
                        )
                        if fresh is not None:
                            judged_meters.append(meter.ctx.meter)
                            findings += fresh
                    findings += self._gateways(db, now)
                except BaseException:  # what this pass found is lost: judge those meters again next pass
                    for name in judged_meters:
                        self.forget(name)
                    raise
            judged = len(judged_meters)
        return PassReport(
            len(self._meters), judged, findings, time.perf_counter() - started, self._not_raised
        )

    def _awaiting(self, db: LedgerReader) -> set[str]:
        """Gateways whose meters are not judged now: their batches arrived with a gap younger than
        ``gap_wait_s`` (see :class:`~collector.config.DetectionSettings`)."""
        if self._settings.gap_wait_s <= 0:
            return set()
        return db.gateways_awaiting(self._clock() - round(self._settings.gap_wait_s * 1000))

    def _gateways(self, db: LedgerReader, now: int) -> list[Finding]:
        """Gateway findings on ``<site>/<gateway>`` not yet applied: spans in which its clock had stepped
        away (its readings re-dated by the ledger; open while the newest data is still stepped), and spans
        it was offline, from its last will to its next birth (wall clock, as the collector saw them)."""
        findings = []
        for site_id, meters in self._by_site.items():
            if self._held is not None and site_id not in self._held:
                continue
            ctx = meters[0].ctx
            poll = max(m.poll_ms for m in meters)
            spans = [
                (gateway, "untrusted_clock", start, None if end + 2 * poll >= now else end + poll)
                for gateway, start, end in db.clock_steps(site_id)
            ]
            offline: dict[str, int] = {}
            for gateway, state, received_at in db.gateway_states(site_id):
                if state is GatewayState.OFFLINE:
                    offline.setdefault(gateway, received_at)
                elif gateway in offline:
                    spans.append((gateway, "gateway_offline", offline.pop(gateway), received_at))
            spans += [(gateway, "gateway_offline", since, None) for gateway, since in offline.items()]
            for gateway, rule, start, end in spans:
                gateway_ctx = Context(site_id, f"{site_id}/{gateway}", ctx.config, ctx.site_config)
                finding = gateway_ctx.finding(Detector.DATA_QUALITY, rule, Episode(start, start, end, 0, 0))
                if (
                    self._gateway_findings.get((finding.meter, finding.detector, finding.rule, start))
                    != finding
                ):
                    findings.append(finding)
        return findings

    def _data_clocks(self, db: LedgerReader, gateway_of: dict[str, str]) -> dict[str, int]:
        """Per configured meter, "now" when replaying history: the end of the newest poll of any meter of
        its gateway (`gateway_of`: meter -> gateway; gateways flush their backlogs each at its own pace)."""
        newest: dict[str, int] = {}
        for m in self._meters:
            ts = db.newest_trusted_ts(m.ctx.meter)
            if ts is not None:
                newest[m.ctx.meter] = ts + m.poll_ms
        by_gateway: dict[str, int] = {}
        for meter, end in newest.items():
            key = gateway_of.get(meter, meter)
            by_gateway[key] = max(by_gateway.get(key, 0), end)
        return {meter: by_gateway[gateway_of.get(meter, meter)] for meter in newest}

    def _judge(self, db: LedgerReader, meter: Meter, now: int, offline: bool) -> list[Finding] | None:
        """The meter's findings not yet applied, or None when nothing changed since the last judgement.
        The meter of an `offline` gateway is not called silent: the gateway's finding says why."""
        ctx, poll = meter.ctx, meter.poll_ms
        newest = db.newest_trusted_ts(ctx.meter, now + poll)
        if newest is None:
            return None
        horizon = bucket_start(min(newest + poll, now))
        seen = self._seen[ctx.meter]
        caught_up = horizon - self._settings.catch_up_days * DAY_MS
        judged_from = caught_up if seen.judged_until is None else min(caught_up, seen.judged_until)
        start = day_start_ms(local_day(judged_from - self._settings.history_days * DAY_MS))
        silent_polls = ctx.thresholds.data_quality.silent_polls
        silent = not offline and now - (newest + poll) > silent_polls * poll
        count = db.count_readings(ctx.meter, start, horizon)
        fingerprint = (horizon, count, silent)
        if fingerprint == seen.fingerprint:
            return None
        samples = db.power_samples(ctx.meter, start, horizon)
        findings: list[Finding] = []
        if samples:
            series = Series.of(
                ctx.meter, samples, poll_ms=poll, end_ms=horizon,
                frozen_polls=ctx.thresholds.data_quality.frozen_polls,
            )  # fmt: skip
            findings = detect_meter(ctx, series)
        if silent and Detector.DATA_QUALITY in DETECTORS_BY_ROLE[ctx.config.role]:
            gap = newest + poll
            episode = Episode(gap, gap + silent_polls * poll, None, 0, 0)
            findings.append(ctx.finding(Detector.DATA_QUALITY, "no_data", episode))
        seen.applied = {k: f for k, f in seen.applied.items() if k[3] >= start or f.end_ms is None}
        seen.fingerprint = fingerprint
        seen.judged_before, seen.judged_until = seen.judged_until, horizon
        fresh = [f for f in findings if seen.applied.get((f.meter, f.detector, f.rule, f.start_ms)) != f]
        oldest = judged_from if ctx.site_config.notify_old_findings else max(judged_from, caught_up)
        raised = [f for f in fresh if f.end_ms is None or f.end_ms > oldest]
        if len(raised) < len(fresh):
            for f in fresh:
                if f.end_ms is not None and f.end_ms <= oldest:  # counted once, not again next pass
                    seen.applied[(f.meter, f.detector, f.rule, f.start_ms)] = f
            self._not_raised += len(fresh) - len(raised)
            log.info(
                "%s: %d findings that ended before %s not raised (before the span judged, or older than "
                "catch_up_days at a site that asked not to be told of those)",
                ctx.meter, len(fresh) - len(raised), local_datetime(oldest).isoformat(),
            )  # fmt: skip
        return raised

    def applied(self, finding: Finding) -> None:
        """The alert store took `finding`: do not apply it again unchanged."""
        key = (finding.meter, finding.detector, finding.rule, finding.start_ms)
        seen = self._seen.get(finding.meter)
        if seen is not None:
            seen.applied[key] = finding
        else:  # a gateway's
            self._gateway_findings[key] = finding

    def forget(self, meter: str) -> None:
        """Judge the meter again at the next pass (its findings could not all be applied)."""
        if meter in self._seen:
            seen = self._seen[meter]
            seen.fingerprint = None
            seen.judged_until = seen.judged_before

    async def run(self, submit: Callable[[Finding], Awaitable[AlertChange]]) -> None:
        """A pass every ``interval_s`` until cancelled; a pass that fails is logged and tried again."""
        try:
            while True:
                await self.run_once(submit)
                await self._until_next_pass()
        finally:
            await asyncio.to_thread(self.close)

    async def _until_next_pass(self) -> None:
        """Wait ``interval_s``; with replicas, claiming sites meanwhile and ending the wait when one is gained."""
        if self._sites_held is None:
            await asyncio.sleep(self._settings.interval_s)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + self._settings.interval_s
        while (left := due - loop.time()) > 0:
            await asyncio.sleep(min(left, self._retry_s))
            if await self._claim_sites():
                return

    async def _claim_sites(self) -> bool:
        """With replicas: take the sites' leases; a site gained or lost is forgotten (judged afresh when it
        is held again). Whether a site was gained."""
        if self._sites_held is None:
            return False
        held = await self._sites_held()
        before = self._held or set()
        changed = held ^ before
        if changed:
            for meter in self._meters:
                if meter.ctx.site in changed:
                    self._seen[meter.ctx.meter] = _Seen()
            self._gateway_findings = {
                k: f for k, f in self._gateway_findings.items() if k[0].split("/")[0] not in changed
            }
            if held - before:
                log.info("detection: this replica judges %s now", ", ".join(sorted(held - before)))
            if before - held:
                log.info("detection: this replica no longer judges %s", ", ".join(sorted(before - held)))
        self._held = held
        return bool(held - before)

    async def run_once(self, submit: Callable[[Finding], Awaitable[AlertChange]]) -> PassReport | None:
        await self._claim_sites()
        report = await self._scan()
        if report is None:
            return None
        changes = 0
        for finding in report.findings:
            try:
                change = await submit(finding)
            except Exception:
                log.exception("could not apply a %s finding on %s", finding.detector.value, finding.meter)
                self.forget(finding.meter)
                continue
            self.applied(finding)
            if self._metrics is not None:
                self._metrics.findings_applied.inc()
            if change.notifies:
                changes += 1
                log.info(
                    "alert %s %s: %s %s on %s%s", change.alert.id, change.kind.value, finding.detector.value,
                    finding.rule, finding.meter, " (raised late)" if change.alert.raised_late else "",
                )  # fmt: skip
        if self._metrics is not None:
            self._metrics.meters_judged.inc(report.judged)
        if report.judged:
            log.info(
                "detection pass: %d of %d meters judged in %.2f s, %d findings applied, %d alerts opened or "
                "resolved",
                report.judged, report.meters, report.seconds, len(report.findings), changes,
            )  # fmt: skip
        return report

    async def _scan(self) -> PassReport | None:
        """One pass on a thread; None (logged, counted, connection reopened next time) if it failed."""
        if self._metrics is not None:
            self._metrics.detection_passes.inc()
        try:
            return await asyncio.to_thread(self.scan)
        except DatabaseError as exc:
            log.warning("detection pass could not read the ledger: %s; trying again next pass", exc)
        except Exception:  # a detector's bug must not stop ingestion: say so loudly, try again next pass
            log.exception("detection pass failed; trying again next pass")
        if self._metrics is not None:
            self._metrics.detection_failures.inc()
        await asyncio.to_thread(self.close)
        return None
