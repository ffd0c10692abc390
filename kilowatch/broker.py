"""How agent and collector reach the MQTT broker: one settings model and one client factory.

aiomqtt is imported inside :meth:`BrokerSettings.client`, so the base install (contracts and CLI) does not
need it.
"""

from __future__ import annotations

import functools
import os
import ssl
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from kilowatch.mqtt_contract import TOPIC_ROOT

if TYPE_CHECKING:
    import aiomqtt

MQTT_PORT = 1883
MQTTS_PORT = 8883


class MqttProtocol(StrEnum):
    V5 = "5"
    """MQTT 5: the default (session expiry, reason codes)."""
    V311 = "3.1.1"
    """For brokers that speak only 3.1.1 (e.g. the embedded amqtt broker the demo falls back to)."""


def _readable(path: Path) -> Path:
    """`path` if this process can read it, else a validation error that names it and says why."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise PydanticCustomError(
            "file_unreadable",
            "cannot read {path}: {reason}",
            {"path": str(path), "reason": exc.strerror or exc},
        ) from None
    if path.is_dir():
        raise PydanticCustomError("file_unreadable", "{path} is a folder, not a file", {"path": str(path)})
    return path


def _ssl_reason(exc: ssl.SSLError | OSError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc).replace("_", " ").lower()


class _PinnedNameContext(ssl.SSLContext):
    """An SSLContext that checks (and sends as SNI) a fixed name instead of the host it connects to.

    paho passes the connect host as ``server_hostname``; this is the one place that can substitute it.
    """

    pinned_name: str

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.pinned_name
        return super().wrap_socket(sock, *args, **kwargs)


class TlsSettings(BaseModel):
    """TLS to the broker: the section's presence turns it on (mqtts://, port 8883 unless set)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # built on first use

    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA(s) that signed the broker's certificate; null = the system's trust store",
    )
    cert_file: Path | None = Field(
        None,
        description="PEM client certificate for mutual TLS (needs key_file); null = no client certificate",
    )
    key_file: Path | None = Field(None, description="PEM private key of cert_file (needs cert_file)")
    key_password: SecretStr | None = Field(
        None, description="Password of an encrypted key_file (never logged); null = the key is not encrypted"
    )
    server_hostname: str | None = Field(
        None,
        min_length=1,
        description="Name the broker's certificate must carry when it differs from host (e.g. host is an IP)",
    )
    insecure_skip_verify: bool = Field(
        False,
        description="Do not check that the certificate names the broker (the CA chain is still verified). "
        "Anyone holding a certificate from the same CA can then impersonate the broker: prefer server_hostname",
    )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file_readable(cls, value: Path | None) -> Path | None:
        return None if value is None else _readable(value)

    @field_validator("ca_file")
    @classmethod
    def _ca_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except (ssl.SSLError, OSError) as exc:
                raise PydanticCustomError(
                    "bad_ca_file",
                    "{path} holds no usable PEM CA certificate ({reason})",
                    {"path": str(value), "reason": _ssl_reason(exc)},
                ) from None
        return value

    @model_validator(mode="after")
    def _client_certificate_pair(self) -> Self:
        def fail(key: str, kind: str, message: str, value: Any) -> ValidationError:
            return ValidationError.from_exception_data(
                "TlsSettings",
                [InitErrorDetails(type=PydanticCustomError(kind, message), loc=(key,), input=value)],
            )

        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            other = "cert_file" if missing == "key_file" else "key_file"
            raise fail(
                missing, "needs_pair", f"{other} is set but {missing} is not; mutual TLS needs both", None
            )
        if self.key_password is not None and self.key_file is None:
            raise fail("key_password", "needs_key_file", "key_password is set but key_file is not", None)
        if self.cert_file is not None and self.key_file is not None:
            try:
                self._load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
            except (ssl.SSLError, OSError) as exc:
                raise fail(
                    "key_file",
                    "bad_client_certificate",
                    f"cannot use {self.cert_file} with this key ({_ssl_reason(exc)}): are they a PEM pair, "
                    "and is key_password right?",
                    str(self.key_file),
                ) from None
        return self

    def _load_client_certificate(self, context: ssl.SSLContext) -> None:
        if self.cert_file is not None and self.key_file is not None:
            # An empty password, never None: with None OpenSSL would prompt on the terminal for an encrypted key.
            password = self.key_password.get_secret_value() if self.key_password else ""
            context.load_cert_chain(self.cert_file, self.key_file, password=password)

    def context(self) -> ssl.SSLContext:
        """A client SSLContext: TLS 1.2 or newer, the CA verified, the name checked unless told not to."""
        context_class = _PinnedNameContext if self.server_hostname else ssl.SSLContext
        context = context_class(ssl.PROTOCOL_TLS_CLIENT)
        if isinstance(context, _PinnedNameContext) and self.server_hostname:
            context.pinned_name = self.server_hostname
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca_file is None:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context.load_verify_locations(cafile=os.fspath(self.ca_file))
        self._load_client_certificate(context)
        context.check_hostname = not self.insecure_skip_verify
        context.verify_mode = ssl.CERT_REQUIRED
        return context


@functools.cache
def _client_class() -> type[aiomqtt.Client]:
    """aiomqtt.Client, except that a connection the broker closes before accepting it fails at once, saying why.

    aiomqtt ignores a disconnection before CONNACK and reports only "Operation timed out" when its timeout
    runs out. That is what a broker demanding a client certificate (mutual TLS, TLS 1.3) or a TLS port
    reached without TLS looks like; the socket's own error (e.g. "tlsv13 alert certificate required") is
    what a technician needs.
    """
    import aiomqtt
    import paho.mqtt.client as paho
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    class Client(aiomqtt.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._last_socket_error: str | None = None
            self._client.on_log = self._remember_error

        def _remember_error(self, client: paho.Client, userdata: Any, level: int, message: str) -> None:
            if level == paho.MQTT_LOG_ERR:
                self._last_socket_error = message

        def _on_disconnect(
            self,
            client: paho.Client,
            userdata: Any,
            flags: paho.DisconnectFlags,
            reason_code: ReasonCode,
            properties: Properties | None = None,
        ) -> None:
            if not self._connected.done():
                reason = self._last_socket_error or str(reason_code)
                self._connected.set_exception(
                    aiomqtt.MqttError(f"the broker closed the connection before accepting it: {reason}")
                )
                return
            super()._on_disconnect(client, userdata, flags, reason_code, properties)

    return Client


class BrokerSettings(BaseModel):
    """Broker address, credentials and reconnection policy, shared by agent and collector configs."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # built on first use

    host: str = Field("127.0.0.1", min_length=1, description="MQTT broker host name or address")
    port: int = Field(
        MQTT_PORT, ge=1, le=65535, description="MQTT broker TCP port (when not set: 1883, or 8883 with tls)"
    )
    protocol: MqttProtocol = Field(
        MqttProtocol.V5, description="MQTT protocol version: 5, or 3.1.1 for brokers that speak only 3.1.1"
    )
    username: str | None = Field(None, description="User name; null for an anonymous broker")
    password: SecretStr | None = Field(None, description="Password (needs username; never logged)")
    tls: TlsSettings | None = Field(
        None,
        description="TLS to the broker (mqtts); null = plain TCP. Without a port set, TLS uses 8883: leave "
        "`port` out, or set it",
    )
    topic_root: str = Field(
        TOPIC_ROOT,
        pattern=r"^[^#+/][^#+]*[^#+/]$",
        description="Topic prefix shared by agents and collectors, which must agree on it: "
        "<topic_root>/<site>/<gateway>/readings and .../status (no wildcards, no leading/trailing '/')",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds")
    reconnect_min_s: float = Field(1.0, gt=0, description="First wait before reconnecting to the broker")
    reconnect_max_s: float = Field(
        60.0, gt=0, description="Longest wait between reconnection attempts (the wait doubles, with jitter)"
    )

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: Any) -> Any:
        """TLS without a port means the MQTT-over-TLS port: 1883 would only fail in the handshake."""
        if isinstance(data, dict) and data.get("tls") is not None and data.get("port") is None:
            data = {**data, "port": MQTTS_PORT}
        return data

    @field_validator("password")
    @classmethod
    def _password_needs_username(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and info.data.get("username") is None:
            raise PydanticCustomError("needs_username", "password is set but username is not; set both")
        return value

    @field_validator("reconnect_max_s")
    @classmethod
    def _not_below_min(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("reconnect_min_s", 0):
            raise PydanticCustomError("order", "must not be less than reconnect_min_s")
        return value

    @property
    def address(self) -> str:
        """The broker for logs: never the credentials."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    def client(
        self, *, identifier: str, will: aiomqtt.Will | None = None, timeout: float | None = None
    ) -> aiomqtt.Client:
        import aiomqtt

        protocol = (
            aiomqtt.ProtocolVersion.V5 if self.protocol is MqttProtocol.V5 else aiomqtt.ProtocolVersion.V311
        )
        return _client_class()(
            self.host,
            self.port,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            identifier=identifier,
            protocol=protocol,
            will=will,
            keepalive=self.keepalive_s,
            timeout=timeout,
            tls_context=self.tls.context() if self.tls is not None else None,
        )
