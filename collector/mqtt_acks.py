"""A persistent MQTT session whose messages are acknowledged only when the collector says so.

Why this module exists: a message must be acknowledged (PUBACK) only after its readings are committed
to the ledger, so that a collector killed between receiving and committing gets the message again from
the broker. aiomqtt 2.x acknowledges every message as soon as paho hands it over and has no API to
defer that (aiomqtt issue 345); paho-mqtt has one (``manual_ack_set`` and ``ack``), reachable only
through aiomqtt's private ``_client``. Both private accesses live here, and nowhere else.

The session must also outlive the connection: aiomqtt's default ``clean_start`` would wipe it at every
start, dropping what the broker queued and whatever was delivered but not yet acknowledged.
"""

from __future__ import annotations

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.config import MqttSettings
from kilowatch.broker import MqttProtocol


def session_client(settings: MqttSettings) -> aiomqtt.Client:
    """The client :meth:`MqttSettings.client` makes (address, credentials, TLS), with a persistent
    session and manual acknowledgement.

    MQTT 5: clean start off, the session expiry interval and the receive maximum (how many unacknowledged
    messages the broker may send at once). MQTT 3.1.1: clean session off. aiomqtt takes these only as
    constructor arguments the shared factory does not pass, hence the private attributes.
    """
    client = settings.client(identifier=settings.client_id)
    if settings.protocol is MqttProtocol.V5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = settings.session_expiry_s
        properties.ReceiveMaximum = settings.receive_maximum
        client._clean_start = False  # private: see the module docstring
        client._properties = properties  # private: see the module docstring
    else:
        client._client._clean_session = False  # private: see the module docstring
    client._client.manual_ack_set(True)  # private: see the module docstring
    return client


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge `message` on the connection it came on (QoS 0 needs none).

    After a reconnection the old connection's messages are redelivered by the broker, so acknowledging
    them on the old client is a harmless no-op.
    """
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)  # private: see the module docstring
