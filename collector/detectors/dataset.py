"""Series from a simulator dataset (``readings/<site>/<gateway>.jsonl`` of ReadingsBatch lines), read in
each gateway's publication order the way the collector receives them.

A gateway whose timestamps jump forward and later come back had an untrusted clock over that span: its
readings there are dropped (the collector quarantines them) and the span is reported, not mistaken for
a silence.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from collector.detectors.series import MOVING, Sample, Series

_JUMP_POLLS = 3
"""A forward step of more than this many polls that later comes back is a clock jump."""


@dataclass
class GatewayData:
    site: str
    gateway: str
    samples: dict[str, list[Sample]]
    untrusted: list[tuple[int, int]]


def _untrusted(stamps: list[int], poll_ms: int) -> tuple[set[int], list[tuple[int, int]]]:
    """(indexes of batches stamped by a jumped clock, [from, to) spans in true time) of one gateway's
    batch timestamps in publication order."""
    dropped: set[int] = set()
    spans = []
    high = 0  # index of the latest timestamp so far
    for j in range(1, len(stamps)):
        if stamps[j] >= stamps[high]:
            high = j
            continue
        start = max(
            (
                i
                for i in range(1, high + 1)
                if i not in dropped and stamps[i] - stamps[i - 1] > _JUMP_POLLS * poll_ms
            ),
            key=lambda i: stamps[i] - stamps[i - 1],
            default=None,
        )
        if start is None or stamps[start - 1] > stamps[j]:
            continue
        dropped.update(range(start, j))
        spans.append((stamps[start - 1] + poll_ms, stamps[j]))
        high = j
    return dropped, spans


def read_gateway(path: Path, poll_ms: int) -> GatewayData:
    batches = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    batches.sort(key=lambda b: b["seq"])
    stamps = [max(r["ts"] for r in b["readings"]) for b in batches]
    dropped, spans = _untrusted(stamps, poll_ms)
    samples: dict[str, list[Sample]] = defaultdict(list)
    for i, batch in enumerate(batches):
        for r in batch["readings"]:
            samples.setdefault(r["meter"], [])
            values = r["values"]
            if i in dropped or "active_power_w" not in values:
                continue
            samples[r["meter"]].append(
                Sample(
                    r["ts"],
                    values["active_power_w"] / 1000,
                    values.get("energy_import_kwh"),
                    tuple(values.get(q) for q in MOVING),
                )
            )
    site, gateway = path.parent.name, path.stem
    return GatewayData(site, gateway, dict(samples), spans)


def read_dataset(
    root: Path, poll_ms: int, start_ms: int, end_ms: int
) -> tuple[dict[str, Series], list[GatewayData]]:
    """Every meter's series over [start_ms, end_ms), and every gateway (with its untrusted spans)."""
    series: dict[str, Series] = {}
    gateways = []
    for path in sorted((root / "readings").glob("*/*.jsonl")):
        data = read_gateway(path, poll_ms)
        gateways.append(data)
        for meter, samples in data.samples.items():
            series[meter] = Series.of(
                meter, samples, poll_ms=poll_ms, start_ms=start_ms, end_ms=end_ms, untrusted=data.untrusted
            )
    return series, gateways
