"""Flow control against a real Mosquitto: the collector's MQTT client never holds more messages
(received, not yet acknowledged) than its receive maximum, whatever the broker sends, and loses none.

Mosquitto 2.0 sends a connected MQTT 5 subscriber more unacknowledged messages than its receive maximum
when they arrive live, and MQTT 3.1.1 has no receive maximum at all: here the broker's own window is off
(``max_inflight_messages 0``), so only the client's window bounds what it holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from app.processes import Mosquitto
from collector import mqtt_acks
from collector.config import MqttSettings
from kilowatch.broker import MqttProtocol

pytestmark = pytest.mark.services

LIMIT = 10
QUEUED = 150
"""Published while the collector is away: the broker sends them all at once when it connects."""
LIVE = 150
"""Published while it is connected."""


async def publish(broker: Mosquitto, numbers: range) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="flow-agent") as client:
        for n in numbers:
            await client.publish(f"flow/{n % 3}", str(n).encode(), qos=1)


@pytest.mark.parametrize("protocol", [MqttProtocol.V5, MqttProtocol.V311])
async def test_the_client_holds_at_most_its_receive_maximum_and_loses_nothing(
    tmp_path: Path, protocol: MqttProtocol
) -> None:
    broker = Mosquitto.start(
        tmp_path / "mosquitto", extra_conf="max_inflight_messages 0\nmax_queued_messages 100000\n"
    )
    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        client_id="flow-collector",
        protocol=protocol,
        receive_maximum=LIMIT,
    )
    try:
        async with mqtt_acks.session_client(settings) as client:
            await client.subscribe("flow/#", qos=1)
        await publish(broker, range(QUEUED))
        received: list[int] = []
        async with mqtt_acks.session_client(settings) as client:
            # As the collector does: consume while subscribing, since the session's messages may come
            # before the SUBACK, which the client reads only once it holds fewer than LIMIT.
            subscribing = asyncio.create_task(client.subscribe("flow/#", qos=1))
            live = asyncio.create_task(publish(broker, range(QUEUED, QUEUED + LIVE)))
            messages = client.messages
            while len(received) < QUEUED + LIVE:
                # Take messages without acknowledging them, up to the limit: the client reads no further.
                hand = [await anext(messages)]
                while len(hand) < LIMIT and len(received) + len(hand) < QUEUED + LIVE:
                    hand.append(await anext(messages))
                    assert len(hand) + len(messages) <= LIMIT
                if len(hand) == LIMIT:
                    await asyncio.sleep(0.05)  # time to read more, were reading not paused
                    assert len(messages) == 0
                assert mqtt_acks.held(client)[0] == len(hand)
                for message in hand:
                    mqtt_acks.ack(client, message)
                received += [int(bytes(message.payload)) for message in hand]
            await live
            await subscribing
            held, peak, pauses = mqtt_acks.held(client)
        assert sorted(received) == list(range(QUEUED + LIVE))  # every message, once
        assert (held, peak) == (0, LIMIT)
        assert pauses >= 1
    finally:
        broker.stop()
