"""BrokerSettings over TLS and mutual TLS against a real Mosquitto, and the config errors around certificates.

The certificates are made at test time with the `openssl` command line (tests/services.py: TestCertificates).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from pydantic import BaseModel, ConfigDict

from app.processes import Mosquitto, TlsListener, require_binary
from kilowatch import yamlconfig
from kilowatch.broker import BrokerSettings, TlsSettings
from tests.services import TestCertificates, eventually

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, certs: TestCertificates) -> Iterator[Mosquitto]:
    broker = Mosquitto.start(tmp_path / "mosquitto", tls=certs.listener())
    yield broker
    broker.stop()


@pytest.fixture
def mtls_broker(tmp_path: Path, certs: TestCertificates) -> Iterator[Mosquitto]:
    broker = Mosquitto.start(tmp_path / "mosquitto", tls=certs.listener(require_certificate=True))
    yield broker
    broker.stop()


async def round_trip(settings: BrokerSettings, topic: str = "kilowatch/v1/s1/g1/readings") -> bytes:
    """Subscribe and publish (QoS 1) through `settings.client()`; what came back."""
    async with settings.client(identifier="tls-test", timeout=10) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"over tls", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("the message iterator ended")


async def refusal(settings: BrokerSettings) -> str:
    with pytest.raises(aiomqtt.MqttError) as caught:
        await round_trip(settings)
    return str(caught.value)


async def test_publish_and_subscribe_over_tls(tls_broker: Mosquitto, certs: TestCertificates) -> None:
    settings = BrokerSettings(host="localhost", port=tls_broker.port, tls=TlsSettings(ca_file=certs.ca))
    assert settings.address == f"mqtts://localhost:{tls_broker.port}"
    assert await round_trip(settings) == b"over tls"
    # The certificate names 127.0.0.1 too.
    by_ip = BrokerSettings(host="127.0.0.1", port=tls_broker.port, tls=TlsSettings(ca_file=certs.ca))
    assert await round_trip(by_ip) == b"over tls"


async def test_a_plain_client_cannot_talk_to_the_tls_listener(tls_broker: Mosquitto) -> None:
    problem = await refusal(BrokerSettings(port=tls_broker.port))
    assert "closed the connection before accepting it" in problem


async def test_a_broker_certificate_from_another_ca_fails_verification(
    tls_broker: Mosquitto, certs: TestCertificates
) -> None:
    problem = await refusal(BrokerSettings(port=tls_broker.port, tls=TlsSettings(ca_file=certs.other_ca)))
    assert "certificate verify failed" in problem


async def test_a_certificate_for_another_name_is_refused_unless_that_name_is_expected(
    tmp_path: Path, certs: TestCertificates
) -> None:
    listener = TlsListener(certs.ca, certs.elsewhere_cert, certs.elsewhere_key)
    broker = Mosquitto.start(tmp_path / "mosquitto", tls=listener)
    try:
        problem = await refusal(BrokerSettings(port=broker.port, tls=TlsSettings(ca_file=certs.ca)))
        assert "certificate is not valid for '127.0.0.1'" in problem
        pinned = TlsSettings(ca_file=certs.ca, server_hostname="broker.elsewhere.test")
        assert await round_trip(BrokerSettings(port=broker.port, tls=pinned)) == b"over tls"
        wrong_pin = TlsSettings(ca_file=certs.ca, server_hostname="broker.nowhere.test")
        assert "not valid for 'broker.nowhere.test'" in await refusal(
            BrokerSettings(port=broker.port, tls=wrong_pin)
        )
        skip = TlsSettings(ca_file=certs.ca, insecure_skip_verify=True)
        assert await round_trip(BrokerSettings(port=broker.port, tls=skip)) == b"over tls"
        # Skipping the name check still verifies the chain.
        skip_other_ca = TlsSettings(ca_file=certs.other_ca, insecure_skip_verify=True)
        assert "certificate verify failed" in await refusal(
            BrokerSettings(port=broker.port, tls=skip_other_ca)
        )
    finally:
        broker.stop()


@pytest.mark.parametrize("encrypted_key", [False, True], ids=["plain-key", "encrypted-key"])
async def test_mutual_tls_with_a_client_certificate(
    mtls_broker: Mosquitto, certs: TestCertificates, encrypted_key: bool
) -> None:
    tls = TlsSettings(
        ca_file=certs.ca,
        cert_file=certs.client_cert,
        key_file=certs.client_key_encrypted if encrypted_key else certs.client_key,
        key_password=certs.KEY_PASSWORD if encrypted_key else None,
    )
    assert await round_trip(BrokerSettings(port=mtls_broker.port, tls=tls)) == b"over tls"


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_broker: Mosquitto, certs: TestCertificates
) -> None:
    problem = await refusal(BrokerSettings(port=mtls_broker.port, tls=TlsSettings(ca_file=certs.ca)))
    assert "closed the connection before accepting it" in problem
    assert "certificate required" in problem
    # The client can see the refusal before the broker has written why: give the log a moment.
    await eventually(
        lambda: "peer did not return a certificate" in mtls_broker.process.log(),
        "the broker's reason in its log",
    )


USER, RIGHT, WRONG = "gw-01", "right-password", "wrong-password"


@pytest.fixture
def password_broker(tmp_path: Path, certs: TestCertificates) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwd"
    subprocess.run(
        [require_binary("mosquitto_passwd"), "-b", "-c", str(passwords), USER, RIGHT], check=True, timeout=30
    )
    broker = Mosquitto.start(
        tmp_path / "mosquitto",
        tls=certs.listener(),
        extra_conf=f"allow_anonymous false\npassword_file {passwords}\n",
    )
    yield broker
    broker.stop()


async def test_the_password_file_refuses_bad_credentials_over_tls(
    password_broker: Mosquitto, certs: TestCertificates
) -> None:
    tls = TlsSettings(ca_file=certs.ca)
    good = BrokerSettings(port=password_broker.port, tls=tls, username=USER, password=RIGHT)
    assert await round_trip(good) == b"over tls"
    # Mosquitto 2.0 answers a wrong password and a missing one alike, with reason code 135.
    bad = BrokerSettings(port=password_broker.port, tls=tls, username=USER, password=WRONG)
    assert await refusal(bad) == "[code:135] Not authorized"
    assert await refusal(BrokerSettings(port=password_broker.port, tls=tls)) == "[code:135] Not authorized"


# The configuration side: what a technician reads when a certificate file is wrong.


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mqtt: BrokerSettings


def load(tmp_path: Path, text: str) -> BrokerSettings:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return yamlconfig.load(_Config, path).mqtt


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(yamlconfig.ConfigError) as caught:
        load(tmp_path, text)
    return caught.value.problems


def test_tls_defaults_to_port_8883_and_keeps_an_explicit_port(
    tmp_path: Path, certs: TestCertificates
) -> None:
    assert load(tmp_path, f"mqtt:\n  tls:\n    ca_file: {certs.ca}\n").port == 8883
    assert load(tmp_path, f"mqtt:\n  port: 9999\n  tls:\n    ca_file: {certs.ca}\n").port == 9999
    assert load(tmp_path, "mqtt:\n  tls: null\n").port == 1883
    # No ca_file: the system's trust store (a broker with a public certificate).
    assert (
        load(tmp_path, "mqtt:\n  host: broker.example.org\n  tls: {}\n").address
        == "mqtts://broker.example.org:8883"
    )


def test_a_missing_ca_file_names_the_line_the_key_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    assert problems(tmp_path, f"mqtt:\n  tls:\n    ca_file: {missing}\n") == [
        f"agent.yaml:3 mqtt.tls.ca_file: {str(missing)!r}: cannot read {missing}: No such file or directory"
    ]


def test_a_ca_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    [problem] = problems(tmp_path, f"mqtt:\n  tls:\n    ca_file: {junk}\n")
    assert problem.startswith(f"agent.yaml:3 mqtt.tls.ca_file: {str(junk)!r}: {junk} holds no usable PEM CA")


def test_a_client_certificate_needs_its_key_and_the_other_way_round(
    tmp_path: Path, certs: TestCertificates
) -> None:
    assert problems(tmp_path, f"mqtt:\n  tls:\n    cert_file: {certs.client_cert}\n") == [
        "agent.yaml:2 mqtt.tls.key_file: cert_file is set but key_file is not; mutual TLS needs both"
    ]
    assert problems(tmp_path, f"mqtt:\n  tls:\n    key_file: {certs.client_key}\n") == [
        "agent.yaml:2 mqtt.tls.cert_file: key_file is set but cert_file is not; mutual TLS needs both"
    ]


def test_a_key_that_does_not_match_or_a_wrong_key_password(tmp_path: Path, certs: TestCertificates) -> None:
    mismatched = f"mqtt:\n  tls:\n    cert_file: {certs.client_cert}\n    key_file: {certs.server_key}\n"
    [problem] = problems(tmp_path, mismatched)
    assert problem.startswith("agent.yaml:4 mqtt.tls.key_file: (value hidden): cannot use")
    assert "key values mismatch" in problem
    wrong_password = (
        f"mqtt:\n  tls:\n    cert_file: {certs.client_cert}\n    key_file: {certs.client_key_encrypted}\n"
        "    key_password: hunter2\n"
    )
    [problem] = problems(tmp_path, wrong_password)
    assert problem.startswith("agent.yaml:4 mqtt.tls.key_file: (value hidden): cannot use")
    assert "is key_password right?" in problem
    assert "hunter2" not in problem


def test_an_unreadable_key_file_and_a_folder(tmp_path: Path, certs: TestCertificates) -> None:
    text = f"mqtt:\n  tls:\n    cert_file: {certs.client_cert}\n    key_file: {tmp_path}\n"
    assert problems(tmp_path, text) == [
        f"agent.yaml:4 mqtt.tls.key_file: (value hidden): cannot read {tmp_path}: Is a directory"
    ]


def test_the_key_password_never_shows(tmp_path: Path, certs: TestCertificates) -> None:
    settings = load(
        tmp_path,
        f"mqtt:\n  tls:\n    ca_file: {certs.ca}\n    cert_file: {certs.client_cert}\n"
        f"    key_file: {certs.client_key_encrypted}\n    key_password: {certs.KEY_PASSWORD}\n",
    )
    assert settings.tls is not None
    assert certs.KEY_PASSWORD not in repr(settings)
    assert certs.KEY_PASSWORD not in settings.model_dump_json()
    assert certs.KEY_PASSWORD not in settings.address
