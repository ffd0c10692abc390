"""The collector's storage: the only package of the collector that speaks SQL.

One SQLite file (WAL) holds the ledger and the alerts. :class:`Ledger` is the single writer of ingested
data (one transaction per group of messages); :class:`AlertLedger` writes alerts and notifications on a
connection of its own; :class:`LedgerReader` serves read-only queries. The schema and its versioned
migrations are in :mod:`collector.store.schema`, the connections each role opens in
:mod:`collector.store.connection`.
"""

from collector.store.alerts import Alert, AlertLedger, AlertQuery, AlertStatus, AlertTransaction
from collector.store.clock import ClockStepSpan, QuarantineReason, QuarantineRow
from collector.store.delivery import MAX_REJECTED_PAYLOAD, RejectedMessage, RejectedRow, SeqGapRow
from collector.store.gateways import GatewayEventRow, GatewayRow, GatewayStateChange
from collector.store.intervals import CounterEvent, CounterEventKind, DayEnergy, IntervalRow
from collector.store.ledger import CLOCK_STEP_TOLERANCE_MS, IngestResult, Item, Ledger
from collector.store.outbox import NotificationRow, TsdbOutboxRow
from collector.store.reader import LedgerReader
from collector.store.readings import COUNTERS, LatestRow, MeterRow, ReadingRow
from collector.store.schema import SCHEMA_VERSION, NewerLedger

__all__ = [
    "CLOCK_STEP_TOLERANCE_MS",
    "COUNTERS",
    "MAX_REJECTED_PAYLOAD",
    "SCHEMA_VERSION",
    "Alert",
    "AlertLedger",
    "AlertQuery",
    "AlertStatus",
    "AlertTransaction",
    "ClockStepSpan",
    "CounterEvent",
    "CounterEventKind",
    "DayEnergy",
    "GatewayEventRow",
    "GatewayRow",
    "GatewayStateChange",
    "IngestResult",
    "IntervalRow",
    "Item",
    "LatestRow",
    "Ledger",
    "LedgerReader",
    "MeterRow",
    "NewerLedger",
    "NotificationRow",
    "QuarantineReason",
    "QuarantineRow",
    "ReadingRow",
    "RejectedMessage",
    "RejectedRow",
    "SeqGapRow",
    "TsdbOutboxRow",
]
