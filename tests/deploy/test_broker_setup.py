"""`kilowatch collector broker-setup` run for real: the real Mosquitto starts with the files it wrote, a gateway
provisioned from its site CA reaches the collector over TLS and mutual TLS (simulator -> agent -> Mosquitto ->
collector, each its own process), and a broker certificate from another CA, an expired broker certificate or
an expired client certificate is refused with the reason in the error."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.processes import Mosquitto, Process, TlsListener, free_port, get_json, port_open, wait_until
from app.provision import SiteCa, issue_client_certificate, issue_server_certificate, new_site_ca
from kilowatch.broker import BrokerSettings
from tests.api_support import api_key
from tests.deploy.test_broker import runnable_conf
from tests.deploy.test_provision import gateway_settings, logs_in, refused

pytestmark = pytest.mark.services


def kilowatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """`kilowatch ARGS`, which must exit with `expect`."""
    result = subprocess.run(kilowatch(*args), capture_output=True, text=True, check=False)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def get(url: str, key: str) -> Any:
    return get_json(url, 5, key=key)


@dataclass
class Host:
    """The collector host as broker-setup left it, with the broker running its configuration."""

    tmp: Path
    etc: Path
    broker: Mosquitto  # .port is the loopback listener
    tls_port: int

    @property
    def ca(self) -> SiteCa:
        return SiteCa(self.etc / "certs" / "ca.pem", self.etc / "certs" / "ca.key")

    def provision(self, gateway: str, *, mutual: bool) -> Path:
        """provision-gateway for site s1, the broker reloaded; the agent.yaml written."""
        out = self.tmp / f"{gateway}.yaml"
        mtls = ["--client-ca-cert", str(self.ca.cert_file), "--client-ca-key", str(self.ca.key_file)]
        run(
            "collector", "provision-gateway", "s1", gateway, "--broker-host", "localhost",
            "--broker-port", str(self.tls_port), "--out", str(out),
            "--password-file", str(self.etc / "kilowatch.passwd"), "--acl-file", str(self.etc / "kilowatch.acl"),
            *(mtls if mutual else []),
        )  # fmt: skip
        assert self.broker.process.proc is not None
        self.broker.process.proc.send_signal(signal.SIGHUP)  # systemctl reload mosquitto
        return out

    def gateway(
        self, agent_yaml: Path, *, ca: Path | None = None, cert: Path | None = None
    ) -> BrokerSettings:
        """The gateway's broker settings, with the files where this test keeps them (NAME.pem, NAME.key)."""
        key = cert.with_suffix(".key") if cert else None
        return gateway_settings(agent_yaml, ca or self.ca.cert_file, cert, key)


def broker_setup(tmp: Path, *, mutual: bool) -> Host:
    """Run broker-setup into tmp/etc and start Mosquitto with what it wrote (ports, persistence folder and
    account swapped for test ones)."""
    etc = tmp / "etc"
    out = run(
        "collector", "broker-setup", "--broker-host", "localhost", "--broker-host", "127.0.0.1",
        "--etc-dir", str(etc), "--collector-out", str(tmp / "collector.yaml"),
        *(["--require-certificate"] if mutual else []),
    ).stdout  # fmt: skip
    assert "systemctl restart mosquitto" in out
    text, plain, tls = runnable_conf((etc / "mosquitto.conf").read_text(), tmp / "broker")
    (tmp / "broker" / "var").mkdir(parents=True)
    return Host(tmp, etc, Mosquitto.run(tmp / "broker", text, plain), tls)


@pytest.fixture
def mutual(tmp_path: Path) -> Iterator[Host]:
    host = broker_setup(tmp_path, mutual=True)
    yield host
    host.broker.stop()


def test_the_files_and_their_owners(mutual: Host) -> None:
    etc = mutual.etc
    modes = {
        path.relative_to(etc).as_posix(): (path.stat().st_mode & 0o777, path.stat().st_gid)
        for path in sorted(etc.rglob("*"))
    }
    group = 0 if not modes else modes["kilowatch.acl"][1]
    assert group != 0  # the broker's group (mosquitto)
    assert modes == {
        "certs": (0o750, group),
        "certs/broker.key": (0o640, group),
        "certs/broker.pem": (0o644, 0),
        "certs/ca.key": (0o600, 0),  # only provisioning (root) signs with it
        "certs/ca.pem": (0o644, 0),
        "kilowatch.acl": (0o640, group),
        "kilowatch.passwd": (0o640, group),
        "mosquitto.conf": (0o644, 0),
    }
    assert (mutual.tmp / "collector.yaml").stat().st_mode & 0o777 == 0o600
    log = mutual.broker.process.log()
    assert "Error" not in log, log
    assert "require_certificate true" in (etc / "mosquitto.conf").read_text()


async def test_agent_to_collector_over_mutual_tls(mutual: Host) -> None:
    tmp = mutual.tmp
    agent_yaml = mutual.provision("gw1", mutual=True)

    collector = yaml.safe_load((tmp / "collector.yaml").read_text())
    api_port, modbus_port = free_port(), free_port()
    collector["mqtt"]["port"] = mutual.broker.port
    collector["ledger"]["path"] = str(tmp / "ledger.db")
    collector["api"] = {"port": api_port}
    (tmp / "collector.yaml").write_text(yaml.safe_dump(collector))

    agent = yaml.safe_load(agent_yaml.read_text())
    agent["mqtt"]["tls"] = {
        "ca_file": str(mutual.ca.cert_file),
        "cert_file": str(tmp / "gw1.pem"),
        "key_file": str(tmp / "gw1.key"),
    }
    agent["spool"] = {"path": str(tmp / "spool.db")}
    agent["poll_interval_s"] = 1
    agent["clock"] = {"mode": "synced"}  # every part shares this machine's clock
    agent["buses"] = [
        {
            "name": "sim",
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": modbus_port,
            "meters": [{"id": "main", "profile": "eastron-sdm630", "unit": 1}],
        }
    ]
    (tmp / "agent.yaml").write_text(yaml.safe_dump(agent))

    procs = [
        Process(
            "sim",
            kilowatch("sim", "serve", "--profile", "eastron-sdm630", "--units", "1", "--tcp", f"127.0.0.1:{modbus_port}"),
            tmp / "sim.log",
        ),
        Process("collector", kilowatch("collector", "run", "--config", str(tmp / "collector.yaml")), tmp / "collector.log"),
        Process("agent", kilowatch("agent", "run", "--config", str(tmp / "agent.yaml")), tmp / "agent.log"),
    ]  # fmt: skip
    try:
        for proc in procs:
            proc.start()
            if proc.name == "sim":  # the agent's first poll must find the meter answering
                wait_until(lambda: port_open("127.0.0.1", modbus_port), 30, "the simulated meter")
        api = f"http://127.0.0.1:{api_port}/api/v1"
        wait_until(lambda: (tmp / "ledger.db").exists(), 30, "the collector's ledger")
        key = api_key(tmp / "ledger.db")
        meters = wait_until(lambda: get(f"{api}/meters", key), 60, "the agent's readings in the collector")
        assert [(m["id"], m["site"], m["gateway"]) for m in meters] == [("main", "s1", "gw1")]
        latest = wait_until(
            lambda: (row := get(f"{api}/meters/main/latest", key))["quality"] == "good" and row,
            30,
            "a good reading of the main meter",
        )
        assert latest["values"]["energy_import_kwh"] > 0, latest
    finally:
        for proc in reversed(procs):
            proc.stop()
    for proc in procs:
        assert proc.stop() == 0, proc.log()[-2000:]  # stopped already: its exit code
    log = mutual.broker.process.log()
    assert "as s1.gw1" in log or "u's1.gw1'" in log, log

    # The gateway's login alone is not enough: the broker demands its certificate.
    assert "certificate required" in await refused(mutual.gateway(agent_yaml))
    # A broker the gateway's CA did not sign (the gateway was given the wrong CA file).
    other = new_site_ca("another CA")
    (tmp / "other-ca.pem").write_bytes(other.cert_pem)
    wrong_ca = mutual.gateway(agent_yaml, ca=tmp / "other-ca.pem", cert=tmp / "gw1.pem")
    assert "certificate verify failed" in await refused(wrong_ca)
    # A client certificate past its end date.
    expired = issue_client_certificate("s1.gw1", mutual.ca, days=0)
    (tmp / "expired.pem").write_bytes(expired.cert_pem)
    (tmp / "expired.key").write_bytes(expired.key_pem)
    assert (
        "certificate expired" in (await refused(mutual.gateway(agent_yaml, cert=tmp / "expired.pem"))).lower()
    )


async def test_tls_with_passwords_an_expired_broker_and_a_second_run_keeping_the_ca(tmp_path: Path) -> None:
    host = broker_setup(tmp_path, mutual=False)
    try:
        first_ca = host.ca.cert_file.read_bytes()
        gw = host.gateway(host.provision("gw1", mutual=False))
        await logs_in(gw)
        login = yaml.safe_load((tmp_path / "collector.yaml").read_text())["mqtt"]
        collector = BrokerSettings(
            host="127.0.0.1", port=host.broker.port, username=login["username"], password=login["password"]
        )
        async with collector.client(identifier=login["client_id"], timeout=10) as sub:
            await sub.subscribe("kilowatch/v1/#", qos=1)
            async with gw.client(identifier="s1.gw1", timeout=10) as pub:
                await pub.publish("kilowatch/v1/s1/gw1/readings", b"over TLS", qos=1)
            message = await anext(aiter(sub.messages))
        assert message.payload == b"over TLS"
    finally:
        host.broker.stop()

    # A broker whose certificate has expired: the gateway refuses it, and says so.
    stale = issue_server_certificate(["localhost"], host.ca, days=0)
    (tmp_path / "stale.pem").write_bytes(stale.cert_pem)
    (tmp_path / "stale.key").write_bytes(stale.key_pem)
    await asyncio.sleep(1)
    expired = Mosquitto.start(
        tmp_path / "expired",
        tls=TlsListener(host.ca.cert_file, tmp_path / "stale.pem", tmp_path / "stale.key"),
    )
    try:
        gw_there = gw.model_copy(update={"port": expired.port})
        assert "certificate has expired" in await refused(gw_there)
    finally:
        expired.stop()

    again = ["collector", "broker-setup", "--broker-host", "localhost", "--etc-dir", str(host.etc)]
    kept = run(*again, "--collector-out", str(tmp_path / "collector.yaml"), expect=1)
    assert "give another --collector-out" in kept.stderr  # an extended collector.yaml is never overwritten
    out = run(*again, "--collector-out", str(tmp_path / "again.yaml")).stdout
    assert "(kept;" in out
    assert host.ca.cert_file.read_bytes() == first_ca  # every gateway's CA file stays valid
    assert "user s1.gw1" in (host.etc / "kilowatch.acl").read_text()  # provisioned gateways stay
    assert (host.etc / "kilowatch.passwd").read_text().count("kilowatch-collector:") == 1
