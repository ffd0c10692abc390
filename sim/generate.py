"""`kilowatch sim generate`: a labelled dataset, readings in the MQTT contract's shape plus the truth.

The output directory holds ``labels.json`` (every injected anomaly, fault and labelled benign variation:
meter, kind, category, start, end, magnitude) and the readings of each gateway, in one of two formats:

- ``readings/<site>/<gateway>.jsonl``: one :class:`ReadingsBatch` per poll cycle of the gateway, ``seq``
  counting from 0 without gaps, as the gateway would publish it (a year of 100 meters is some 33 GB).
- ``readings/<site>/<gateway>.npz``: the same readings in columns (the layout is in ``kilowatch sim
  generate --help``), about 70 bytes a reading; :func:`npz_batches` turns it back into the batches the JSON lines hold.

Everything is a pure function of the scenario, its seed, the start date and the number of days, so two
runs write the same bytes, whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from kilowatch.mqtt_contract import SCHEMA_VERSION, Channel, ClockState, Quality, topic
from kilowatch.profiles import load_builtin
from kilowatch.timebase import DAY_MS, VIETNAM_TZ
from sim.anomalies import CRC_FAILURE_SHARE, LOAD_EFFECTS, AnomalyKind
from sim.deployment import VALUE_FAULTS, FaultyMeter, Placed, build_loads, place, simulated_meter
from sim.load_model import Floats, Times, instants, uniforms
from sim.loads import Category
from sim.meter import COUNTERS
from sim.scenario import ExpandedMeter, Scenario

DATASET_QUANTITIES = (
    "active_power_w", "active_power_l1_w", "active_power_l2_w", "active_power_l3_w",
    "reactive_power_var", "apparent_power_va", "power_factor",
    "voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a", "current_l3_a",
    "frequency_hz", "energy_import_kwh", "reactive_energy_import_kvarh",
)  # fmt: skip
"""What a dataset carries by default: enough for every detector and for checking the physics, at a
fraction of the size of the whole vocabulary."""

_CHUNK_DAYS = 7
"""Days of poll cycles evaluated in one array per meter: long enough that numpy's per-call cost vanishes,
short enough to stay in the processor's caches."""

_PHASOR_QUANTITIES = frozenset(
    {"voltage_l1_l2_v", "voltage_l2_l3_v", "voltage_l3_l1_v", "current_n_a"}
)  # fmt: skip

Progress = Callable[[int], None]
Format = Literal["jsonl", "npz"]
FORMATS: tuple[Format, ...] = ("jsonl", "npz")

BOOTED_BEFORE_MS = 60_000
"""Every simulated gateway booted a minute before its data begins and stays up the whole run."""

GOOD, ERROR, ABSENT = 0, 1, 2
"""A meter's status in one poll cycle: answered, answered with an error (no values), no reading at all."""


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


@dataclass(frozen=True)
class Polls:
    """A run of a gateway's poll cycles, evaluated together: what each meter answered in each cycle."""

    ts: Times
    """Poll instants [T] (true time)."""
    clock_shift_ms: npt.NDArray[np.int64]
    """The gateway clock's error in each cycle [T]."""
    status: npt.NDArray[np.int8]
    """[T, M]: GOOD, ERROR or ABSENT."""
    delay_ms: npt.NDArray[np.int64]
    """[T, M]: how late a slow meter's answer was stamped."""
    values: list[dict[str, Floats]]
    """Per meter, its quantities [T] (whatever the status)."""


class Run:
    """One dataset run: the scenario made concrete from `start` for `days` at `interval_s`."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        start: date,
        days: int,
        interval_s: int,
        all_quantities: bool = False,
        warmup_days: int = 0,
    ) -> None:
        if days < 1 or interval_s < 1 or warmup_days < 0:
            raise ValueError("days and interval must be positive, warm-up days not negative")
        self.scenario = scenario
        self.start = start
        self.days = days
        self.interval = timedelta(seconds=interval_s)
        self.interval_ms = interval_s * 1000
        self.labelled_from = datetime.combine(start, time(), VIETNAM_TZ)
        self.begin = self.labelled_from - timedelta(days=warmup_days)
        """Readings begin here: `warmup_days` of history (no anomalies placed, nothing labelled) before
        `start`, as a site has before anyone judges its data."""
        self.end = self.labelled_from + timedelta(days=days)
        self.steps = (warmup_days + days) * 86_400 // interval_s

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
                    if span.start < self.end and span.end > self.labelled_from:
                        labels.append(
                            Label(meter_id, span.kind, span.category, max(span.start, self.labelled_from),
                                  min(span.end, self.end), span.magnitude, span.unit)
                        )  # fmt: skip
        return sorted(labels, key=lambda label: (label.start, label.target, label.kind))

    def boot_id(self, site: str, gateway: str) -> str:
        """The gateway's boot, one for the whole run (it booted `BOOTED_BEFORE_MS` before the data begins):
        what its readings' `mono_ms` count from, so a stepped clock can be told from true time."""
        digest = hashlib.sha256(f"boot/{self.scenario.seed}/{site}/{gateway}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16]))

    def quantities(self, meter: ExpandedMeter) -> list[str]:
        """What `meter` reports, in its profile's order."""
        registers = load_builtin(meter.spec.profile).registers
        return [r.quantity for r in registers if self._all_quantities or r.quantity in DATASET_QUANTITIES]

    def polls(self, site: str, gateway: str, progress: Progress | None = None) -> Iterator[Polls]:
        """The gateway's poll cycles a week at a time, each meter with the faults placed on it."""
        meters = self.gateways[(site, gateway)]
        faults: dict[str, list[Placed]] = defaultdict(list)
        for p in self.placed:
            if p.kind not in LOAD_EFFECTS:
                faults[p.target].append(p)
        sims = [
            FaultyMeter(
                simulated_meter(
                    self.scenario, m, self.loads[m.id], self.begin, self.interval.total_seconds()
                ),
                [p for p in faults[m.id] if p.kind in VALUE_FAULTS],
            )
            for m in meters
        ]
        phasors = any(q in _PHASOR_QUANTITIES for m in meters for q in self.quantities(m))
        begin_ms = int(instants(self.begin)[0])
        chunk = max(1, _CHUNK_DAYS * DAY_MS // self.interval_ms)
        for first in range(0, self.steps, chunk):
            stop = min(first + chunk, self.steps)
            ts = begin_ms + np.arange(first, stop, dtype=np.int64) * self.interval_ms
            shift = np.zeros(len(ts), dtype=np.int64)
            for p in faults.get(f"{site}/{gateway}", []):
                shift[_inside(ts, p)] += round((p.spec.seconds or 0) * 1000)
            status = np.full((len(ts), len(meters)), GOOD, dtype=np.int8)
            delay = np.zeros((len(ts), len(meters)), dtype=np.int64)
            for j, (meter, sim) in enumerate(zip(meters, sims, strict=True)):
                _answers(ts, sim.key, faults[meter.id], status[:, j], delay[:, j])
                for outage in meter.site.outages:
                    first, after = instants(
                        datetime.combine(outage.first, time(), VIETNAM_TZ),
                        datetime.combine(outage.last + timedelta(days=1), time(), VIETNAM_TZ),
                    )
                    status[(ts >= first) & (ts < after), j] = ABSENT
            yield Polls(ts, shift, status, delay, [sim.upcoming(stop, phasors=phasors) for sim in sims])
            if progress is not None:
                progress(stop - first)

    def batches(self, site: str, gateway: str, progress: Progress | None = None) -> Iterator[str]:
        """The gateway's ReadingsBatch JSON lines, one per poll cycle in which any meter answered."""
        meters = self.gateways[(site, gateway)]
        names = [self.quantities(m) for m in meters]
        boot, booted = self.boot_id(site, gateway), int(instants(self.begin)[0]) - BOOTED_BEFORE_MS
        seq = 0
        for polls in self.polls(site, gateway, progress):
            rows = [
                np.column_stack([v[q] for q in n]).tolist() for v, n in zip(polls.values, names, strict=True)
            ]
            status, delay = polls.status.tolist(), polls.delay_ms.tolist()
            for i, (ts, shift) in enumerate(
                zip(polls.ts.tolist(), polls.clock_shift_ms.tolist(), strict=True)
            ):
                readings = [
                    _reading(
                        meter.id,
                        meter.spec.profile,
                        names[j],
                        ts + shift + delay[i][j],
                        ts + delay[i][j] - booted,
                        status[i][j],
                        rows[j][i],
                    )
                    for j, meter in enumerate(meters)
                    if status[i][j] != ABSENT
                ]
                if not readings:
                    continue
                batch = {
                    "schema_version": SCHEMA_VERSION, "site": site, "gateway": gateway, "seq": seq,
                    "sent_at": ts + shift + self.interval_ms, "boot_id": boot, "readings": readings,
                }  # fmt: skip
                seq += 1
                yield json.dumps(batch, separators=(",", ":"))

    def write_npz(self, site: str, gateway: str, path: Path, progress: Progress | None = None) -> None:
        """The gateway's readings in columns, as ``kilowatch sim generate --help`` describes them."""
        meters = self.gateways[(site, gateway)]
        names = [self.quantities(m) for m in meters]
        quantities = list(dict.fromkeys(q for n in names for q in n))
        shape = (self.steps, len(meters))
        columns = {
            q: np.full(shape, np.nan, dtype=np.float64 if q in COUNTERS else np.float32) for q in quantities
        }
        ts = np.empty(self.steps, dtype=np.int64)
        shift = np.empty(self.steps, dtype=np.int64)
        status = np.empty(shape, dtype=np.int8)
        delay = np.empty(shape, dtype=np.int32)
        first = 0
        for polls in self.polls(site, gateway, progress):
            stop = first + len(polls.ts)
            ts[first:stop], shift[first:stop] = polls.ts, polls.clock_shift_ms
            status[first:stop], delay[first:stop] = polls.status, polls.delay_ms
            for j, (values, carried) in enumerate(zip(polls.values, names, strict=True)):
                good = polls.status[:, j] == GOOD
                for q in carried:
                    columns[q][first:stop, j] = np.where(good, values[q], np.nan)
            first = stop
        answered = (status != ABSENT).any(axis=1)
        seq = np.where(answered, np.cumsum(answered) - 1, -1)
        arrays: dict[str, Any] = {
            "site": site, "gateway": gateway, "schema_version": SCHEMA_VERSION,
            "interval_s": self.interval_ms // 1000, "ts": ts, "seq": seq, "clock_shift_ms": shift,
            "boot_id": self.boot_id(site, gateway), "booted_ms": int(instants(self.begin)[0]) - BOOTED_BEFORE_MS,
            "meter": [m.id for m in meters], "profile": [m.spec.profile for m in meters], "quantity": quantities,
            "carries": np.array([[q in n for q in quantities] for n in names], dtype=np.bool_),
            "status": status, "delay_ms": delay, **columns,
        }  # fmt: skip
        _save_npz(path, arrays)


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    """`np.savez`, but with the members dated 1980-01-01 instead of now, so two runs write the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy"), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _inside(ts: Times, placed: Placed) -> npt.NDArray[np.bool_]:
    start, end = instants(placed.start, placed.end)
    result: npt.NDArray[np.bool_] = (ts >= start) & (ts < end)
    return result


def _answers(
    ts: Times, key: str, faults: list[Placed], status: npt.NDArray[np.int8], delay: npt.NDArray[np.int64]
) -> None:
    """Fill one meter's `status` and `delay` in the cycles `ts` from the faults placed on it."""
    failed = np.zeros(len(ts), dtype=np.bool_)
    silent = np.zeros(len(ts), dtype=np.bool_)
    for p in faults:
        inside = _inside(ts, p)
        if p.kind is AnomalyKind.SILENT:
            silent |= inside
        elif p.kind is AnomalyKind.EXCEPTION:
            failed |= inside
        elif p.kind is AnomalyKind.CRC:
            failed |= inside & (uniforms(ts, "crc", key) < CRC_FAILURE_SHARE)
        elif p.kind is AnomalyKind.SLOW and p.spec.seconds is not None:
            delay[inside] = round(p.spec.seconds * 1000)
    status[failed] = ERROR
    status[silent] = ABSENT
    delay[status != GOOD] = 0


def _reading(
    meter: str, profile: str, names: list[str], ts: int, mono_ms: int, status: int, row: list[float]
) -> dict[str, Any]:
    """One poll of `meter` as the agent would publish it: stamped `ts` by the gateway's clock (which a
    clock jump puts off), `mono_ms` by its monotonic clock (which nothing puts off)."""
    if status == ERROR:
        return {
            "meter": meter, "profile": profile, "ts": ts, "values": {},
            "quality": Quality.ERROR.value, "value_quality": dict.fromkeys(names, Quality.ERROR.value),
            "clock": ClockState.SYNCED.value, "mono_ms": mono_ms,
        }  # fmt: skip
    return {
        "meter": meter, "profile": profile, "ts": ts,
        "values": {q: round(v, 4) for q, v in zip(names, row, strict=True)},
        "quality": Quality.GOOD.value, "clock": ClockState.SYNCED.value, "mono_ms": mono_ms,
    }  # fmt: skip


def npz_batches(path: Path) -> Iterator[dict[str, Any]]:
    """The ReadingsBatch documents a gateway's ``.npz`` holds, in seq order: those its JSON lines hold
    (values at float32 precision, energy counters exact)."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    quantities = arrays["quantity"].tolist()
    carried = [[q for q, c in zip(quantities, row, strict=True) if c] for row in arrays["carries"].tolist()]
    columns = {q: arrays[q].astype(np.float64).tolist() for q in quantities}
    meters = list(zip(arrays["meter"].tolist(), arrays["profile"].tolist(), carried, strict=True))
    interval_ms = int(arrays["interval_s"]) * 1000
    booted = int(arrays["booted_ms"])
    status, delay = arrays["status"].tolist(), arrays["delay_ms"].tolist()
    for i, (ts, seq, shift) in enumerate(
        zip(arrays["ts"].tolist(), arrays["seq"].tolist(), arrays["clock_shift_ms"].tolist(), strict=True)
    ):
        if seq < 0:
            continue
        readings = []
        for j, (meter, profile, names) in enumerate(meters):
            if status[i][j] == ABSENT:
                continue
            row = [columns[q][i][j] for q in names]
            stamped, mono = ts + shift + delay[i][j], ts + delay[i][j] - booted
            readings.append(_reading(meter, profile, names, stamped, mono, status[i][j], row))
        yield {
            "schema_version": int(arrays["schema_version"]), "site": str(arrays["site"]),
            "gateway": str(arrays["gateway"]), "seq": seq, "sent_at": ts + shift + interval_ms,
            "boot_id": str(arrays["boot_id"]), "readings": readings,
        }  # fmt: skip


class DatasetFiles:
    """Where ``--out`` puts a run: ``readings/<site>/<gateway>.<format>`` per gateway, then ``labels.json``."""

    def __init__(self, run: Run, out: Path) -> None:
        self.run = run
        self.out = out
        self.written: list[Path] = []

    def path(self, site: str, gateway: str, fmt: Format) -> Path:
        path = self.out / "readings" / site / f"{gateway}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.written.append(path)
        return path

    def gateway(self, site: str, gateway: str) -> TextIO:
        return self.path(site, gateway, "jsonl").open("w", encoding="utf-8")

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


def _write_gateway(
    run: Run, site: str, gateway: str, fmt: Format, path: Path, progress: Progress | None
) -> int:
    """Write one gateway's readings; the poll cycles written."""
    if fmt == "npz":
        run.write_npz(site, gateway, path, progress)
    else:
        with path.open("w", encoding="utf-8") as f:
            for line in run.batches(site, gateway, progress):
                f.write(line + "\n")
    return run.steps


_worker_run: Run | None = None
"""The run a worker process writes gateways of (inherited through fork, never pickled)."""


def _adopt(run: Run) -> None:
    global _worker_run
    _worker_run = run


def _write_in_worker(site: str, gateway: str, fmt: Format, path: Path) -> int:
    assert _worker_run is not None
    return _write_gateway(_worker_run, site, gateway, fmt, path, None)


def write_dataset(
    run: Run, out: Path, progress: Progress | None = None, *, fmt: Format = "jsonl", jobs: int = 1
) -> list[Path]:
    """Write the readings and labels of `run` under `out`; the files written, labels.json last.

    With `jobs` > 1, gateways are written by that many processes at once: each gateway is a pure function
    of the run, so the bytes are the same.
    """
    files = DatasetFiles(run, out)
    work = [(site, gateway, fmt, files.path(site, gateway, fmt)) for site, gateway in sorted(run.gateways)]
    if jobs > 1 and len(work) > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(jobs, len(work)), context, _adopt, (run,)) as pool:
            for steps in pool.map(_write_in_worker, *zip(*work, strict=True)):
                if progress is not None:
                    progress(steps)
    else:
        for site, gateway, _, path in work:
            _write_gateway(run, site, gateway, fmt, path, progress)
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
