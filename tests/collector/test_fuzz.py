"""A real `kilowatch collector run` process under 20,000+ generated payloads on a real Mosquitto: readings,
status and events (retained too, some before the collector ever connected), with integer and timestamp
boundaries, floats, huge strings, deep nesting, invalid UTF-8 and oversize payloads, valid batches mixed in.

The collector stays up, stores every valid batch exactly once, counts every refusal by reason (as the
contract's own parser predicts it, plus nothing dead-lettered), and its RSS stays within 300 MB.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from app.processes import UNBOUNDED_QUEUE, Mosquitto, Process, free_port, get_text, wait_until
from collector.config import LimitsSettings
from collector.metrics import RejectReason
from collector.store import LedgerReader, Location
from collector.validate import Rejected, parse_message
from kilowatch.mqtt_contract import SCHEMA_VERSION, Channel, topic
from tests.ledger_support import LedgerAt, ledger_settings

pytestmark = pytest.mark.services

ROOT = "kilowatch/v1"
PAYLOADS = 20_000
"""Published while the collector runs (the retained ones before it starts come on top)."""
GOOD_GATEWAYS = 10
GOOD_METERS = 4
FUZZ_GATEWAYS = 20
RSS_LIMIT_KB = 300 * 1024
NEAR_BASELINE_KB = 64 * 1024
"""What the collector may keep above its RSS at start once the load is over (caches, allocator arenas)."""
LIMIT = LimitsSettings().max_payload_bytes

BOUNDARY_INTS: list[Any] = [2**63, 2**63 - 1, 2**64, 2**64 + 1, -1, -(2**63) - 1, 0, 10**100]
WEIRD: list[Any] = [1.5, -0.0, 1e308, -1e308, "1", "", None, True, [], {}, "x" * 70_000, [[[[[[]]]]]]]
NOW_MS = int(time.time() * 1000)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def metrics(api: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in get_text(f"{api}/metrics").splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def reading(meter: str, ts: int, value: float) -> dict[str, Any]:
    return {
        "meter": meter,
        "profile": "eastron-sdm630",
        "ts": ts,
        "values": {"energy_import_kwh": value, "active_power_w": 1000.0},
        "quality": "good",
        "clock": "synced",
        "mono_ms": 1000 + ts - NOW_MS + 3_600_000,
    }


def readings_batch(gateway: str, seq: int, readings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "site": "fz",
        "gateway": gateway,
        "seq": seq,
        "spool_id": f"{zlib.crc32(gateway.encode()):08x}",
        "sent_at": NOW_MS,
        "boot_id": "0f0f0f0f-0000-4000-8000-000000000000",
        "readings": readings,
    }


def status(gateway: str, ts: int) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "site": "fz",
        "gateway": gateway,
        "state": "online",
        "ts": ts,
        "agent_version": "0.1.0",
        "meters": [f"fzm-{gateway}-0"],
        "clock_anchor": {
            "boot_id": "0f0f0f0f-0000-4000-8000-000000000000",
            "offset_ms": NOW_MS - 3_600_000,
            "synced_at": ts,
        },
    }


def event(gateway: str, ts: int) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "site": "fz",
        "gateway": gateway,
        "ts": ts,
        "kind": "spool_evicted",
        "readings": 3,
        "oldest_ts": ts - 1000,
        "newest_ts": ts,
        "detail": "fuzz",
    }


def _set(data: Any, path: tuple[str | int, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


MUTABLE: dict[Channel, list[tuple[str | int, ...]]] = {
    Channel.READINGS: [
        ("seq",), ("sent_at",), ("schema_version",), ("site",), ("spool_id",), ("boot_id",), ("readings",),
        ("readings", 0, "ts"), ("readings", 0, "mono_ms"), ("readings", 0, "meter"), ("readings", 0, "profile"),
        ("readings", 0, "values", "energy_import_kwh"), ("readings", 0, "values", "active_power_w"),
        ("readings", 0, "quality"), ("readings", 0, "clock"), ("readings", 0, "values"),
    ],
    Channel.STATUS: [
        ("ts",), ("state",), ("meters",), ("agent_version",), ("clock_anchor", "offset_ms"),
        ("clock_anchor", "synced_at"), ("clock_anchor",), ("schema_version",),
    ],
    Channel.EVENTS: [("ts",), ("readings",), ("oldest_ts",), ("newest_ts",), ("kind",), ("detail",)],
}  # fmt: skip


@dataclass
class Fuzz:
    """Generated messages and what the contract's own parser says of each."""

    rng: random.Random
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    """(topic, payload, retain) in publishing order."""
    expected_rejections: Counter[str] = field(default_factory=Counter)
    good: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Meter -> the (ts, energy) of every valid batch's readings."""
    _seqs: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, payload: bytes, *, retain: bool = False) -> None:
        self.messages.append((name, payload, retain))
        if len(payload) > LIMIT:
            self.expected_rejections[RejectReason.TOO_LARGE.value] += 1
            return
        try:
            parse_message(name, payload, root=ROOT)
        except Rejected as rejected:
            self.expected_rejections[rejected.reason.value] += 1

    def good_batch(self) -> None:
        gateway = f"gw-ok-{self.rng.randrange(GOOD_GATEWAYS)}"
        seq = self._seqs[gateway] = self._seqs.get(gateway, -1) + 1
        ts = NOW_MS - 3_000_000 + seq * 1000
        readings = [reading(f"ok-{gateway}-{m}", ts, seq + m / 10) for m in range(GOOD_METERS)]
        for r in readings:
            self.good.setdefault(r["meter"], []).append((ts, r["values"]["energy_import_kwh"]))
        name = topic("fz", gateway, Channel.READINGS)
        payload = json.dumps(readings_batch(gateway, seq, readings)).encode()
        parse_message(name, payload, root=ROOT)  # valid, or the test is wrong
        self.add(name, payload)

    def base(self, channel: Channel, gateway: str) -> dict[str, Any]:
        ts = NOW_MS - self.rng.randrange(3_000_000)
        if channel is Channel.READINGS:
            seq = self._seqs[gateway] = self._seqs.get(gateway, -1) + 1
            return readings_batch(gateway, seq, [reading(f"fzm-{gateway}-{self.rng.randrange(3)}", ts, 1.0)])
        return status(gateway, ts) if channel is Channel.STATUS else event(gateway, ts)

    def mutated(self, channel: Channel, gateway: str) -> tuple[str, bytes]:
        """A message of a fuzz gateway, mangled one way or another (or valid with extreme numbers)."""
        rng = self.rng
        name = topic("fz", gateway, channel)
        data = self.base(channel, gateway)
        kind = rng.randrange(1000)
        if kind < 550:  # one field set to a boundary or a weird value
            _set(data, rng.choice(MUTABLE[channel]), rng.choice(BOUNDARY_INTS + WEIRD))
            payload = json.dumps(data).encode()
        elif kind < 620:  # deep nesting (now and then very deep)
            depth = rng.choice([100, 1000, 10_000]) if kind < 617 else 500_000
            payload = ("[" * depth + "]" * depth).encode() if rng.random() < 0.5 else b'{"a":' * depth
        elif kind < 680:  # invalid UTF-8, inside a string or raw
            text = json.dumps(data).encode()
            payload = text.replace(b'"fz"', b'"f\xff\xfez"', 1) if rng.random() < 0.5 else rng.randbytes(64)
        elif kind < 682:  # a huge string within the limit
            _set(data, rng.choice(MUTABLE[channel]), "y" * rng.randrange(100_000, LIMIT - 10_000))
            payload = json.dumps(data).encode()
        elif kind < 683:  # oversize
            payload = json.dumps({**data, "pad": "z" * (LIMIT + rng.randrange(1, 2**20))}).encode()
        elif kind < 800:  # JSON's non-numbers, not an object, empty, a duplicate key, cut short
            text = json.dumps(data).encode()
            payload = rng.choice(
                [b"NaN", b"[1, 2]", b"", b"null", b"Infinity", text[:-1] + b', "site": "zz"}', text[:-5]]
            )
        elif kind < 840:  # a topic that lies
            other = f"fz-{rng.randrange(FUZZ_GATEWAYS)}"
            name = rng.choice([topic("fz", other, channel), f"{ROOT}/FZ/{gateway}/{channel.value}"])
            payload = json.dumps(data).encode()
        elif kind < 880 and channel is Channel.READINGS:  # many readings, unknown quantities
            data["readings"] = data["readings"] * rng.choice([2, 50])
            if rng.random() < 0.5:
                data["readings"][0]["values"] = {"bogus_w": 1.0}
            payload = json.dumps(data).encode()
        else:  # valid, with extreme but in-contract numbers
            if channel is Channel.READINGS:
                data["seq"] = rng.choice([2**63 - 1, 10**15, 0])
                data["readings"][0]["mono_ms"] = rng.choice([0, 2**63 - 1, None])
                data["readings"][0]["values"]["energy_import_kwh"] = rng.choice([0.0, 1e-300, 9.9e11])
            elif channel is Channel.EVENTS:
                data["readings"] = rng.choice([0, 2**63 - 1])
            else:
                data["clock_anchor"]["offset_ms"] = rng.choice([-(2**63), 2**63 - 1, 0])
            payload = json.dumps(data).encode()
        return name, payload


def generate(seed: int) -> tuple[Fuzz, Fuzz]:
    """(retained before the collector starts: one per fuzz gateway's status and events topics, each the
    one the broker keeps; the main run, 5% of it retained too)."""
    retained = Fuzz(random.Random(seed))
    for n in range(FUZZ_GATEWAYS):
        for channel in (Channel.STATUS, Channel.EVENTS):
            payload = b""
            while not payload:  # (an empty retained payload would delete the topic's retained message)
                _, payload = retained.mutated(channel, f"fz-{n}")
            retained.add(topic("fz", f"fz-{n}", channel), payload, retain=True)
    main = Fuzz(random.Random(seed + 1))
    rng = main.rng
    while len(main.messages) < PAYLOADS:
        if rng.random() < 0.1:
            main.good_batch()
        else:
            name, payload = main.mutated(rng.choice(list(Channel)), f"fz-{rng.randrange(FUZZ_GATEWAYS)}")
            main.add(name, payload, retain=bool(payload) and rng.random() < 0.05)
    return retained, main


def publish_all(broker: Mosquitto, messages: list[tuple[str, bytes, bool]]) -> None:
    """One paho client, QoS 1, many in flight; returns once the broker has acknowledged every message."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzzer-{free_port()}")
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(name, payload, qos=1, retain=retain) for name, payload, retain in messages]
        for info in infos:
            info.wait_for_publish(timeout=120)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class RssWatch:
    """The highest VmRSS of a process, sampled every 50 ms while in the ``with`` block."""

    pid: int
    peak_kb: int = 0

    @contextmanager
    def watching(self) -> Iterator[RssWatch]:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                with suppress(OSError, RuntimeError):
                    self.peak_kb = max(self.peak_kb, rss_kb(self.pid))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


def test_the_collector_survives_20000_fuzzed_payloads_and_keeps_every_valid_batch(
    tmp_path: Path, ledger_at: LedgerAt
) -> None:
    retained, main = generate(seed=16)
    assert len(main.messages) >= PAYLOADS
    broker = Mosquitto.start(tmp_path / "mosquitto", extra_conf=UNBOUNDED_QUEUE)
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    ledger = ledger_at("ledger")
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"host": broker.host, "port": broker.port, "client_id": "fuzz-collector"},
                "ledger": ledger_settings(ledger),
                "api": {"host": "127.0.0.1", "port": api_port, "metrics_auth": "none"},
            }
        )
    )
    collector = Process(
        "collector",
        [sys.executable, "-m", "app", "collector", "run", "--config", str(config)],
        tmp_path / "c.log",
    )
    try:
        publish_all(broker, retained.messages)  # a brand-new collector gets these first
        collector.start()
        assert collector.proc is not None
        wait_until(lambda: metrics(api)["kilowatch_collector_mqtt_connected"] == 1, 30, "the collector")
        baseline_kb = rss_kb(collector.proc.pid)
        expected = retained.expected_rejections + main.expected_rejections
        good_readings = sum(map(len, main.good.values()))
        started = time.monotonic()
        with RssWatch(collector.proc.pid).watching() as watch:
            publish_all(broker, main.messages)
            published_s = time.monotonic() - started

            def done() -> bool:
                counted = sum(refusals(metrics(api)).values())
                return counted >= sum(expected.values()) and stored_good(ledger) >= good_readings

            wait_until(done, 180, "every message to be stored or counted", interval=0.5)
        processed_s = time.monotonic() - started
        assert collector.alive(), collector.log()[-5000:]
        m = metrics(api)
        counted = refusals(m)
        time.sleep(2)
        after_kb = rss_kb(collector.proc.pid)
        print(
            f"\n{len(main.messages) + len(retained.messages)} payloads published in {published_s:.1f} s, "
            f"processed in {processed_s:.1f} s; collector RSS {baseline_kb // 1024} MB at start, peak "
            f"{watch.peak_kb // 1024} MB, {after_kb // 1024} MB after; refused: {dict(sorted(counted.items()))}"
        )
        assert counted == {r.value: expected.get(r.value, 0) for r in RejectReason}, dead_letters(ledger)
        assert watch.peak_kb <= RSS_LIMIT_KB
        assert after_kb <= baseline_kb + NEAR_BASELINE_KB
        with LedgerReader(ledger) as reader:
            for meter, want in main.good.items():
                got = [(r.ts, r.values["energy_import_kwh"]) for r in reader.readings(meter, 0, 2**62)]
                assert sorted(got) == sorted(want), meter
        assert not any(k.startswith("kilowatch_collector_task_restarts_total") and v for k, v in m.items())
        assert "Traceback" not in collector.log()
    finally:
        collector.stop()
        broker.stop()


def refusals(samples: dict[str, float]) -> dict[str, int]:
    """The collector's refused messages by reason, from /metrics."""
    name = "kilowatch_collector_rejected_messages_total"
    return {r.value: int(samples.get(f'{name}{{reason="{r.value}"}}', 0)) for r in RejectReason}


def stored_good(ledger: Location) -> int:
    with LedgerReader(ledger) as reader:
        return sum(
            len(reader.readings(f"ok-gw-ok-{g}-{m}", 0, 2**62))
            for g in range(GOOD_GATEWAYS)
            for m in range(GOOD_METERS)
        )


def dead_letters(ledger: Location) -> list[tuple[str, str]]:
    with LedgerReader(ledger) as reader:
        return [
            (row.topic, row.detail) for row in reader.rejected(limit=10_000) if row.reason == "unprocessable"
        ]
