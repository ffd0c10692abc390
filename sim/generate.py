"""`kilowatch sim generate`: a labelled dataset, readings in the MQTT contract's shape plus the truth.

The output directory holds ``readings/<site>/<gateway>.jsonl`` (one :class:`ReadingsBatch` per poll
cycle of a gateway, ``seq`` counting from 0 without gaps) and ``labels.json`` (every injected anomaly,
fault and labelled benign variation: meter, kind, category, start, end, magnitude). Everything is a
pure function of the scenario, its seed, the start date and the number of days, so two runs write the
same bytes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from kilowatch.mqtt_contract import SCHEMA_VERSION, Channel, ClockState, Quality, topic
from kilowatch.profiles import load_builtin
from sim.anomalies import LOAD_EFFECTS, AnomalyKind
from sim.deployment import VALUE_FAULTS, FaultyMeter, Placed, build_loads, place, simulated_meter
from sim.load_model import VIETNAM_TZ, uniform
from sim.loads import Category
from sim.scenario import ExpandedMeter, Scenario

DATASET_QUANTITIES = (
    "active_power_w", "active_power_l1_w", "active_power_l2_w", "active_power_l3_w",
    "reactive_power_var", "apparent_power_va", "power_factor",
    "voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a", "current_l3_a",
    "frequency_hz", "energy_import_kwh", "reactive_energy_import_kvarh",
)  # fmt: skip
"""What a dataset carries by default: enough for every detector and for checking the physics, at a
fraction of the size of the whole vocabulary."""

_CRC_FAILURE_SHARE = 0.3
"""Share of polls a noisy line (a `crc` fault) loses."""

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Label:
    target: str
    kind: str
    category: Category
    start: datetime
    end: datetime
    magnitude: float
    unit: str

    def as_json(self) -> dict[str, Any]:
        return {
            "meter": self.target, "kind": self.kind, "category": self.category.value,
            "start": self.start.astimezone(VIETNAM_TZ).isoformat(), "end": self.end.astimezone(VIETNAM_TZ).isoformat(),
            "start_ms": _ms(self.start), "end_ms": _ms(self.end), "magnitude": self.magnitude, "unit": self.unit,
        }  # fmt: skip


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


class Run:
    """One dataset run: the scenario made concrete from `start` for `days` at `interval_s`."""

    def __init__(
        self, scenario: Scenario, *, start: date, days: int, interval_s: int, all_quantities: bool = False
    ) -> None:
        if days < 1 or interval_s < 1:
            raise ValueError("days and interval must be positive")
        self.scenario = scenario
        self.start = start
        self.days = days
        self.interval = timedelta(seconds=interval_s)
        self.begin = datetime.combine(start, time(), VIETNAM_TZ)
        self.end = self.begin + timedelta(days=days)
        self.steps = days * 86_400 // interval_s
        self.placed = place(scenario, start, days)
        self.loads = build_loads(scenario, self.placed)
        self.gateways: dict[tuple[str, str], list[ExpandedMeter]] = defaultdict(list)
        for meter in scenario.meters:
            self.gateways[(meter.site_id, meter.gateway)].append(meter)
        self._all_quantities = all_quantities

    def labels(self) -> list[Label]:
        """Ground truth: placed anomalies (also on the main meter of a sub-metered one) and model spans."""
        labels = [
            Label(p.target, p.kind.value, p.category, p.start, p.end, p.magnitude, p.unit)
            for p in self.placed
        ]
        mains = {m.site_id: m.id for m in self.scenario.meters if m.spec.role == "main"}
        site_of = {m.id: m.site_id for m in self.scenario.meters}
        labels += [
            Label(mains[site_of[p.target]], p.kind.value, p.category, p.start, p.end, p.magnitude, p.unit)
            for p in self.placed
            if p.kind in LOAD_EFFECTS
            and p.target in site_of
            and mains.get(site_of[p.target], p.target) != p.target
        ]
        for meter_id, load in self.loads.items():
            for d in range(self.days):
                for span in load.spans(self.start + timedelta(days=d)):
                    if span.start < self.end and span.end > self.begin:
                        labels.append(
                            Label(meter_id, span.kind, span.category, max(span.start, self.begin),
                                  min(span.end, self.end), span.magnitude, span.unit)
                        )  # fmt: skip
        return sorted(labels, key=lambda label: (label.start, label.target, label.kind))

    def batches(self, site: str, gateway: str, progress: Progress | None = None) -> Iterator[str]:
        """The gateway's ReadingsBatch JSON lines, one per poll cycle in which any meter answered."""
        meters = self.gateways[(site, gateway)]
        profiles = {m.id: load_builtin(m.spec.profile) for m in meters}
        quantities = {
            meter_id: [q for q in (r.quantity for r in p.registers) if self._all_quantities or q in DATASET_QUANTITIES]
            for meter_id, p in profiles.items()
        }  # fmt: skip
        faults: dict[str, list[Placed]] = defaultdict(list)
        for p in self.placed:
            if p.kind not in LOAD_EFFECTS:
                faults[p.target].append(p)
        clock_jumps = faults.get(f"{site}/{gateway}", [])
        sims = {
            m.id: FaultyMeter(
                simulated_meter(
                    self.scenario, m, self.loads[m.id], self.begin, self.interval.total_seconds()
                ),
                [p for p in faults[m.id] if p.kind in VALUE_FAULTS],
            )
            for m in meters
        }
        seq = 0
        for step in range(self.steps):
            t = self.begin + step * self.interval
            ts = _ms(t)
            shift_ms = sum(round((p.spec.seconds or 0) * 1000) for p in clock_jumps if p.active(t))
            readings = []
            for meter in meters:
                reading = self._reading(meter, sims[meter.id], t, faults[meter.id], quantities)
                if reading is not None:
                    reading["ts"] += shift_ms
                    readings.append(reading)
            if progress is not None:
                progress(1)
            if not readings:
                continue
            batch = {
                "schema_version": SCHEMA_VERSION, "site": site, "gateway": gateway, "seq": seq,
                "sent_at": ts + shift_ms + round(self.interval.total_seconds() * 1000), "readings": readings,
            }  # fmt: skip
            seq += 1
            yield json.dumps(batch, separators=(",", ":"))

    def _reading(
        self,
        meter: ExpandedMeter,
        sim: FaultyMeter,
        t: datetime,
        faults: list[Placed],
        quantities: Mapping[str, list[str]],
    ) -> dict[str, Any] | None:
        """One poll of `meter` at `t` as the agent would publish it, with the faults active then."""
        active = [p for p in faults if p.active(t)]
        values = sim.read(t)
        ts = _ms(t)
        kinds = {p.kind for p in active}
        if AnomalyKind.SILENT in kinds:
            return None
        failed = AnomalyKind.EXCEPTION in kinds or (
            AnomalyKind.CRC in kinds and uniform("crc", sim.key, ts) < _CRC_FAILURE_SHARE
        )
        names = quantities[meter.id]
        base = {"meter": meter.id, "profile": meter.spec.profile, "ts": ts}
        if failed:
            return base | {
                "values": {}, "quality": Quality.ERROR.value,
                "value_quality": dict.fromkeys(names, Quality.ERROR.value), "clock": ClockState.SYNCED.value,
            }  # fmt: skip
        for p in active:
            if p.kind is AnomalyKind.SLOW and p.spec.seconds is not None:
                base["ts"] = ts + round(p.spec.seconds * 1000)
        return base | {
            "values": {q: round(values[q], 4) for q in names},
            "quality": Quality.GOOD.value,
            "clock": ClockState.SYNCED.value,
        }


class DatasetFiles:
    """Where ``--out`` puts a run: ``readings/<site>/<gateway>.jsonl`` per gateway, then ``labels.json``."""

    def __init__(self, run: Run, out: Path) -> None:
        self.run = run
        self.out = out
        self.written: list[Path] = []

    def gateway(self, site: str, gateway: str) -> TextIO:
        path = self.out / "readings" / site / f"{gateway}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.written.append(path)
        return path.open("w", encoding="utf-8")

    def finish(self) -> list[Path]:
        """Write labels.json; every file written, labels.json last."""
        run = self.run
        labels = {
            "scenario": run.scenario.name, "seed": run.scenario.seed, "start": run.start.isoformat(),
            "days": run.days, "interval_s": round(run.interval.total_seconds()),
            "labels": [label.as_json() for label in run.labels()],
        }  # fmt: skip
        path = self.out / "labels.json"
        path.write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
        return [*self.written, path]


def write_dataset(run: Run, out: Path, progress: Progress | None = None) -> list[Path]:
    """Write the readings and labels of `run` under `out`; the files written, labels.json last."""
    files = DatasetFiles(run, out)
    for site, gateway in sorted(run.gateways):
        with files.gateway(site, gateway) as f:
            for line in run.batches(site, gateway, progress):
                f.write(line + "\n")
    return files.finish()


class Broker(BaseModel):
    """An MQTT broker to publish a run to, from ``mqtt://HOST:PORT``."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=0xFFFF)

    @classmethod
    def parse(cls, url: str) -> Broker:
        """``mqtt://HOST[:PORT]`` -> Broker; ValueError naming what is wrong."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r} has a bad port") from None
        if parts.scheme != "mqtt" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{url!r} is not mqtt://HOST[:PORT]")
        return cls(host=parts.hostname, port=port or 1883)


async def publish_dataset(
    run: Run, broker: Broker, progress: Progress | None = None, files: DatasetFiles | None = None
) -> int:
    """Publish the readings of `run` as its gateways would flush a backlog: each gateway's batches in
    `seq` order on its readings topic, QoS 1 over MQTT 5 (each acknowledged before the next), historic
    timestamps untouched; also written to `files` if given. The number of batches published."""
    import aiomqtt

    published = 0
    client_id = f"kilowatch-sim-{run.scenario.name}-{run.start.isoformat()}"
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        for site, gateway in sorted(run.gateways):
            name = topic(site, gateway, Channel.READINGS)
            with files.gateway(site, gateway) if files else nullcontext() as f:
                for line in run.batches(site, gateway, progress):
                    await client.publish(name, line.encode(), qos=1)
                    if f is not None:
                        f.write(line + "\n")
                    published += 1
    return published
