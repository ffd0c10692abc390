"""The collector's storage: the only package of the collector that speaks SQL.

One database holds the ledger and the alerts: a SQLite file (WAL; the embedded default) or a PostgreSQL
database (:class:`Postgres`; readings partitioned by month), the same store code on both (see
:mod:`collector.store.connection`). :class:`Ledger` is the single writer of ingested
data (one transaction per group of messages); :class:`AlertLedger` writes alerts and notifications on a
connection of its own; :class:`LedgerReader` serves read-only queries. The schema and its versioned
migrations are in :mod:`collector.store.schema`, the connections each role opens in
:mod:`collector.store.connection`; what is forgotten and when in :mod:`collector.store.retention`.
"""

from collector.store.alerts import Alert, AlertLedger, AlertQuery, AlertStatus, AlertTransaction
from collector.store.checks import DEFAULT_MAX_KW, RATED_HEADROOM, IngestChecks
from collector.store.clock import ClockStepSpan, QuarantineReason, QuarantineRow
from collector.store.connection import DatabaseError, LedgerUnwritable, Location, Postgres, UnstorableValue
from collector.store.delivery import (
    MAX_REJECTED_PAYLOAD,
    RejectedLimits,
    RejectedMessage,
    RejectedRow,
    SeqGapRow,
)
from collector.store.gateways import CollectorEventKind, GatewayEventRow, GatewayRow, GatewayStateChange
from collector.store.intervals import CounterEvent, CounterEventKind, DayEnergy, IntervalRow
from collector.store.ledger import (
    CLOCK_STEP_TOLERANCE_MS,
    BadValue,
    IngestResult,
    Item,
    Ledger,
    ReadingRejection,
)
from collector.store.outbox import NotificationRow, TsdbOutboxRow
from collector.store.owners import Binding, OwnerRow
from collector.store.reader import LedgerReader
from collector.store.readings import COUNTERS, LatestRow, MeterRow, ReadingRow
from collector.store.retention import Pruned, RetentionPolicy
from collector.store.schema import SCHEMA_VERSION, NewerLedger

__all__ = [
    "CLOCK_STEP_TOLERANCE_MS",
    "COUNTERS",
    "DEFAULT_MAX_KW",
    "MAX_REJECTED_PAYLOAD",
    "RATED_HEADROOM",
    "SCHEMA_VERSION",
    "Alert",
    "AlertLedger",
    "AlertQuery",
    "AlertStatus",
    "AlertTransaction",
    "BadValue",
    "Binding",
    "ClockStepSpan",
    "CollectorEventKind",
    "CounterEvent",
    "CounterEventKind",
    "DatabaseError",
    "DayEnergy",
    "GatewayEventRow",
    "GatewayRow",
    "GatewayStateChange",
    "IngestChecks",
    "IngestResult",
    "IntervalRow",
    "Item",
    "LatestRow",
    "Ledger",
    "LedgerReader",
    "LedgerUnwritable",
    "Location",
    "MeterRow",
    "NewerLedger",
    "NotificationRow",
    "OwnerRow",
    "Postgres",
    "Pruned",
    "QuarantineReason",
    "QuarantineRow",
    "ReadingRejection",
    "ReadingRow",
    "RejectedLimits",
    "RejectedMessage",
    "RejectedRow",
    "RetentionPolicy",
    "SeqGapRow",
    "TsdbOutboxRow",
    "UnstorableValue",
]
