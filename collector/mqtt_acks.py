"""A persistent MQTT session whose messages are acknowledged only when the collector says so, and whose
reads stop while the collector holds as many unacknowledged messages as its receive maximum.

Why this module exists: a message must be acknowledged (PUBACK) only after its readings are committed
to the ledger, so that a collector killed between receiving and committing gets the message again from
the broker. aiomqtt 2.x acknowledges every message as soon as paho hands it over and has no API to
defer that (aiomqtt issue 345); paho-mqtt has one (``manual_ack_set`` and ``ack``), reachable only
through aiomqtt's private ``_client``. Every private access lives here, and nowhere else.

The session must also outlive the connection: aiomqtt's default ``clean_start`` would wipe it at every
start, dropping what the broker queued and whatever was delivered but not yet acknowledged.

Flow control: the broker is asked (MQTT 5 receive maximum) not to send more than ``receive_maximum``
unacknowledged messages, but Mosquitto 2.0 does not keep to it for messages that arrive while the
subscriber is connected (measured: receive maximum 20, 1,541 unacknowledged messages delivered; only
what it had queued before the connection is held back), and MQTT 3.1.1 has no such limit at all. aiomqtt
reads the socket whenever it is readable and queues every message without bound, so while an agent
drained a week's backlog faster than the ledger committed it, the collector's memory grew to the size of
the backlog. Hence :class:`_Window`: the client stops reading the socket once it holds ``receive_maximum``
messages received and not yet acknowledged, and reads again after the next acknowledgement. Nothing is
dropped nor acknowledged early: unread messages stay in the kernel's socket buffer and at the broker
(TCP flow control), which is where a backlog belongs. It also stops once the payloads it holds reach
:data:`MAX_HELD_BYTES`, so that the receive maximum's worth of the largest messages the broker lets through
(2 MiB each) cannot take the collector's memory past its bound.
"""

from __future__ import annotations

import weakref
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.config import MqttSettings
from kilowatch.broker import MqttProtocol

MAX_HELD_BYTES = 32 * 2**20
"""Payload bytes a client holds (received, not yet acknowledged) before it stops reading; it can exceed this
by one message."""


class _Window:
    """The messages a client holds (received, not yet acknowledged), and reading paused at `limit`.

    It takes over the socket reader aiomqtt registers (same work: ``loop_read``, TLS's pending bytes, a
    failure ends the connection), reading one packet at a time and never while `held` is at `limit`.
    paho processes one packet per ``loop_read`` here (it would process more only for the client's own
    QoS>0 publishes or QoS 2 messages in flight, which the collector has none of), so `held` never goes
    above `limit`.
    """

    def __init__(self, client: aiomqtt.Client, limit: int) -> None:
        self.limit = limit
        self.held = 0
        """Messages received and not yet acknowledged (QoS 0 ones until :func:`ack` is called for them)."""
        self.held_bytes = 0
        """Their payloads' bytes."""
        self.peak = 0
        """The most `held` has been."""
        self.pauses = 0
        """How many times reading stopped at `limit`."""
        self._client: aiomqtt.Client = weakref.proxy(client)  # the client keeps its window in _windows
        self._fd: int | None = None
        self._reading = False
        paho = client._client  # private: see the module docstring
        paho.on_message = self._on_message
        paho.on_socket_open = self._on_socket_open
        paho.on_socket_close = self._on_socket_close

    # paho's callbacks, in front of aiomqtt's own

    def _on_message(self, paho: Any, userdata: Any, message: Any) -> None:
        self._client._on_message(paho, userdata, message)  # private: see the module docstring
        self.held += 1
        self.held_bytes += len(message.payload)
        self.peak = max(self.peak, self.held)

    def _on_socket_open(self, paho: Any, userdata: Any, sock: Any) -> None:
        # Called from aiomqtt's connecting thread. aiomqtt schedules its reader (and its keepalive task);
        # ours, scheduled after it, replaces the reader.
        self._client._on_socket_open(paho, userdata, sock)  # private: see the module docstring
        self._client._loop.call_soon_threadsafe(self._take_over, sock.fileno())  # private: idem

    def _on_socket_close(self, paho: Any, userdata: Any, sock: Any) -> None:
        self._fd = None
        self._reading = False
        self._client._on_socket_close(paho, userdata, sock)  # private: see the module docstring

    # reading

    def _take_over(self, fd: int) -> None:
        if self._client._client.socket() is None:  # closed meanwhile
            return
        self._fd = fd
        self._start_reading()  # replaces aiomqtt's reader, even at the limit (then _read pauses)

    def _full(self) -> bool:
        return self.held >= self.limit or self.held_bytes >= MAX_HELD_BYTES

    def _resume(self) -> None:
        if self._fd is not None and not self._reading and not self._full():
            self._start_reading()

    def _start_reading(self) -> None:
        assert self._fd is not None
        self._reading = True
        loop = self._client._loop  # private: see the module docstring
        loop.add_reader(self._fd, self._read)
        loop.call_soon(self._read)  # TLS may hold decrypted bytes the socket no longer signals

    def _pause(self) -> None:
        if self._fd is not None and self._reading:
            self._client._loop.remove_reader(self._fd)  # private: see the module docstring
            self._reading = False
            self.pauses += 1

    def _read(self) -> None:
        paho = self._client._client  # private: see the module docstring
        try:
            while self._reading and not self._full():
                paho.loop_read()
                pending = getattr(paho._sock, "pending", None)  # private: see the module docstring
                if pending is None or pending() <= 0:
                    break
        except Exception as exc:  # as aiomqtt's reader: a failed read ends the connection
            disconnected = self._client._disconnected  # private: see the module docstring
            if not disconnected.done():
                disconnected.set_exception(exc)
            return
        if self._full():
            self._pause()

    def release(self, size: int) -> None:
        """One held message of `size` payload bytes acknowledged: read again if reading had stopped."""
        self.held -= 1
        self.held_bytes -= size
        if not self._reading:
            self._resume()


_windows: weakref.WeakKeyDictionary[aiomqtt.Client, _Window] = weakref.WeakKeyDictionary()


def session_client(settings: MqttSettings) -> aiomqtt.Client:
    """The client :meth:`MqttSettings.client` makes (address, credentials, TLS), with a persistent
    session, manual acknowledgement, and at most ``settings.receive_maximum`` messages held.

    MQTT 5: clean start off, the session expiry interval and the receive maximum (how many unacknowledged
    messages the broker may send at once). MQTT 3.1.1: clean session off. aiomqtt takes these only as
    constructor arguments the shared factory does not pass, hence the private attributes. Either way the
    client itself stops reading at the receive maximum (see the module docstring).
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
    _windows[client] = _Window(client, settings.receive_maximum)
    return client


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge `message` on the connection it came on (QoS 0 needs none), and let the client read
    again if it held its receive maximum. Call it once for every message received, QoS 0 included.

    After a reconnection the old connection's messages are redelivered by the broker, so acknowledging
    them on the old client is a harmless no-op.
    """
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)  # private: see the module docstring
    window = _windows.get(client)
    if window is not None:
        window.release(len(message.payload) if isinstance(message.payload, bytes | bytearray) else 0)


def held(client: aiomqtt.Client) -> tuple[int, int, int]:
    """(messages held now, the most ever held, how many times reading stopped) by a session client."""
    window = _windows[client]
    return window.held, window.peak, window.pauses
