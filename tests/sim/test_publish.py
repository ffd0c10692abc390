"""`kilowatch sim generate --publish`: the dataset through a real Mosquitto on the contract's topics."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from app.processes import Mosquitto, free_port
from kilowatch.mqtt_contract import Channel, ReadingsBatch, subscription, topic
from sim.cli import app

pytestmark = pytest.mark.services


async def test_published_batches_are_the_files_out_writes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    received: dict[str, list[bytes]] = defaultdict(list)
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, identifier="collector-stand-in", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(subscription(Channel.READINGS), qos=1)
        generate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "sim", "generate", "--scenario", "office-lang-son",
            "--days", "2", "--start", "2025-06-02", "--interval", "300",
            "--publish", f"mqtt://{mosquitto.host}:{mosquitto.port}", "--out", str(tmp_path / "out"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(generate.communicate(), 120)
        assert generate.returncode == 0, output.decode()
        files = sorted((tmp_path / "out" / "readings").glob("*/*.jsonl"))
        expected = {
            topic(path.parent.name, path.stem, Channel.READINGS): path.read_bytes().splitlines()
            for path in files
        }
        total = sum(map(len, expected.values()))
        assert f"published {total} batches" in output.decode()

        async def collect() -> None:
            async for message in client.messages:
                assert message.qos == 1
                received[str(message.topic)].append(bytes(message.payload))
                if sum(map(len, received.values())) == total:
                    return

        await asyncio.wait_for(collect(), 60)
    assert received == expected  # same bytes, in seq order, on each gateway's readings topic
    assert total == 2 * 86_400 // 300
    first = ReadingsBatch.model_validate_json(received[next(iter(received))][0])
    assert first.seq == 0
    assert first.readings[0].ts == 1_748_797_200_000  # 2025-06-02 00:00 +07:00: historic, as a backlog


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give --out, --publish or both"),
        (["--publish", "http://localhost:1883"], 2, "mqtt://HOST[:PORT]"),
        (["--publish", "mqtt://localhost:99999"], 2, "bad port"),
        (["--publish", f"mqtt://127.0.0.1:{free_port()}"], 1, "cannot publish to mqtt://127.0.0.1:"),
    ],
)
def test_bad_publish_targets_are_refused(args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(app, ["generate", "--scenario", "street-lighting", "--days", "1", *args])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
