"""The collector's Prometheus metrics, on a registry per instance so tests and replicas never share state."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.store import BadValue, QuarantineReason, ReadingRejection
from kilowatch.mqtt_contract import GatewayEventKind


class RejectReason(StrEnum):
    """Why an MQTT message was refused; the ``reason`` label and the ``rejected.reason`` column."""

    INVALID_JSON = "invalid_json"
    INVALID_SCHEMA = "invalid_schema"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    """Larger than ``limits.max_payload_bytes``: refused before parsing."""
    UNPROCESSABLE = "unprocessable"
    """Valid, yet storing it failed with an unexpected error (a bug, or a value SQLite refuses): dead-lettered
    so that the messages behind it go on."""


class CollectorMetrics:
    """Every counter the collector keeps, registered on its own `registry` (served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rejected = Counter(
            "kilowatch_collector_rejected_messages",
            "MQTT messages refused (stored in the ledger's rejected table), by reason",
            ["reason"],
            registry=r,
        )
        for reason in RejectReason:
            self.rejected.labels(reason=reason.value)  # every reason is exported from the start, at 0
        self.rejected_unstored = Counter(
            "kilowatch_collector_rejected_unstored",
            "Refused messages counted but not kept nor logged: their gateway had more than "
            "limits.rejected_stored_per_minute refused that minute",
            registry=r,
        )
        self.rejected_readings = Counter(
            "kilowatch_collector_readings_rejected",
            "Readings of valid batches refused (counted, not stored), by reason",
            ["reason"],
            registry=r,
        )
        for rejection in ReadingRejection:
            self.rejected_readings.labels(reason=rejection.value)
        self.bad_values = Counter(
            "kilowatch_collector_bad_values",
            "Values of stored readings that are bad (kept with their reason, served in /latest, never booked "
            "as energy), by reason",
            ["reason"],
            registry=r,
        )
        for bad in BadValue:
            self.bad_values.labels(reason=bad.value)
        self.ledger_writable = Gauge(
            "kilowatch_collector_ledger_writable",
            "0 while the ledger cannot commit (disk full, I/O error): ingestion pauses, the broker keeps the "
            "messages",
            registry=r,
        )
        self.ledger_writable.set(1)
        self.task_restarts = Counter(
            "kilowatch_collector_task_restarts",
            "Background tasks restarted after an unexpected error, by task",
            ["task"],
            registry=r,
        )
        self.accepted_readings = Counter(
            "kilowatch_collector_readings_accepted", "Readings newly stored in the ledger", registry=r
        )
        self.stored_readings = Counter(
            "kilowatch_collector_readings_stored",
            "Readings the ledger's committed transactions inserted: what was stored, counted at the commit, "
            "never what arrived (a redelivered reading the ledger had is not counted)",
            registry=r,
        )
        self.duplicate_readings = Counter(
            "kilowatch_collector_readings_duplicate",
            "Readings ignored because the ledger already had that (meter, ts)",
            registry=r,
        )
        self.counter_resets = Counter(
            "kilowatch_collector_counter_resets",
            "Energy counters that went backwards (meter reset or replacement)",
            registry=r,
        )
        self.store_errors = Counter(
            "kilowatch_collector_store_errors",
            "Messages the ledger could not store (database errors)",
            registry=r,
        )
        self.tsdb_errors = Counter(
            "kilowatch_collector_tsdb_errors", "TSDB write requests that failed", registry=r
        )
        self.tsdb_points_written = Counter(
            "kilowatch_collector_tsdb_points_written", "Points the TSDB accepted", registry=r
        )
        self.tsdb_outbox_rows = Gauge(
            "kilowatch_collector_tsdb_outbox_rows",
            "Outbox rows (one per stored batch) waiting for the TSDB",
            registry=r,
        )
        self.tsdb_outbox_points = Gauge(
            "kilowatch_collector_tsdb_outbox_points",
            "Readings (points) in the outbox waiting for the TSDB",
            registry=r,
        )
        self.duplicate_batches = Counter(
            "kilowatch_collector_batches_duplicate",
            "Readings batches skipped whole because their (site, gateway, spool_id, seq) was seen",
            registry=r,
        )
        self.missing_batches = Gauge(
            "kilowatch_collector_batches_missing",
            "Batches in open seq gaps: numbered by a gateway, never delivered (see /api/v1/gateways/gaps)",
            registry=r,
        )
        self.quarantined = Gauge(
            "kilowatch_collector_readings_quarantined",
            "Readings kept in quarantine (an unsynchronised clock awaiting its anchor, an implausible time), by reason",
            ["reason"],
            registry=r,
        )
        for quarantine_reason in QuarantineReason:
            self.quarantined.labels(reason=quarantine_reason.value)
        self.corrected = Counter(
            "kilowatch_collector_readings_corrected",
            "Unsynchronised readings re-dated from the gateway's clock anchor and stored",
            registry=r,
        )
        self.clock_stepped = Counter(
            "kilowatch_collector_readings_clock_stepped",
            "Readings stamped by a gateway clock stepped away from its boot's offset, re-dated by monotonic time",
            registry=r,
        )
        self.gateway_events = Counter(
            "kilowatch_collector_gateway_events",
            "Gateway events received (stored in gateway_events), by kind",
            ["kind"],
            registry=r,
        )
        for kind in GatewayEventKind:
            self.gateway_events.labels(kind=kind.value)
        self.evicted_readings = Counter(
            "kilowatch_collector_evicted_readings",
            "Readings gateways report evicted from their spool unpublished (spool_evicted events)",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "kilowatch_collector_mqtt_connected", "1 while connected to the MQTT broker", registry=r
        )
        self.pruned_rows = Counter(
            "kilowatch_collector_pruned_rows",
            "Rows the ledger's retention deleted (ledger.retention), by table; packed: readings moved from rows "
            "into compressed day blocks; partitions: emptied month partitions of readings dropped (PostgreSQL)",
            ["table"],
            registry=r,
        )
        self.reclaimed_bytes = Counter(
            "kilowatch_collector_reclaimed_bytes",
            "Bytes of the ledger's file given back to the file system after pruning (incremental vacuum)",
            registry=r,
        )
        self.detection_passes = Counter(
            "kilowatch_collector_detection_passes",
            "Detection passes over the configured meters (failed ones included)",
            registry=r,
        )
        self.detection_failures = Counter(
            "kilowatch_collector_detection_failures",
            "Detection passes that failed and will be retried",
            registry=r,
        )
        self.meters_judged = Counter(
            "kilowatch_collector_detection_meters_judged",
            "Meters judged again because their data changed (0 in a pass: detection has caught up)",
            registry=r,
        )
        self.findings_applied = Counter(
            "kilowatch_collector_detection_findings_applied",
            "Findings new or changed since last judged, applied to the alert store",
            registry=r,
        )
