"""The collector host's Mosquitto: `kilowatch collector broker-setup`.

It lays out what deploy/mosquitto.conf expects under /etc/mosquitto: the site CA (made once, then kept:
every gateway trusts it), the broker's certificate for the names the gateways connect to, the password file
and the ACL with the collector's login, and the configuration itself, which is deploy/mosquitto.conf (shipped
in the package) with only its folder and, for mutual TLS, ``require_certificate`` changed. It also writes a
ready collector.yaml with the collector's login on the broker's loopback listener. Gateways are added
afterwards with `provision-gateway`, which extends the same password file and ACL.

Mosquitto 2 reads its certificates, password file and ACL as the user it switches to (``user mosquitto``),
also on ``systemctl reload``: those files are root-owned and group-readable by that group only; the CA key is
root's alone (only provisioning, run as root, uses it).
"""

from __future__ import annotations

import grp
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from app.provision import (
    ProvisionError,
    SiteCa,
    hashed_entry,
    issue_server_certificate,
    new_site_ca,
    without_user,
)
from collector.config import CollectorConfig
from kilowatch.mqtt_contract import TOPIC_ROOT

DEFAULT_ETC = Path("/etc/mosquitto")
"""The folder deploy/mosquitto.conf names for every file it reads."""
COLLECTOR_USER = "kilowatch-collector"
"""The collector's broker login (and, with use_username_as_clientid, its client id and session)."""
LEDGER = Path("/var/lib/kilowatch/kilowatch.db")
"""The ledger in the collector unit's StateDirectory, as an absolute path so that `kilowatch collector backup`
and `restore` find it from any folder."""
CA_NAME = "kilowatch site CA"


def conf_template() -> str:
    """deploy/mosquitto.conf: shipped in the wheel as app/mosquitto.conf, else the repository's."""
    packaged = Path(str(resources.files("app"))) / "mosquitto.conf"
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf").read_text()


def _swap(text: str, pattern: str, replacement: str) -> str:
    text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count == 0:
        raise ProvisionError(f"deploy/mosquitto.conf no longer has {pattern!r}")
    return text


def render_conf(template: str, etc: Path, *, require_certificate: bool) -> str:
    """The broker's configuration: `template` with its files under `etc` and the client-certificate policy."""
    text = _swap(template, r"/etc/mosquitto/", f"{etc}/")
    return _swap(
        text, r"^require_certificate false$", f"require_certificate {str(require_certificate).lower()}"
    )


def loopback_port(conf: str) -> int:
    """The port of the configuration's loopback listener, the one the collector uses."""
    found = re.search(r"^listener (\d+) 127\.0\.0\.1$", conf, flags=re.MULTILINE)
    if found is None:
        raise ProvisionError("deploy/mosquitto.conf has no loopback listener (listener PORT 127.0.0.1)")
    return int(found[1])


@dataclass(frozen=True)
class BrokerFiles:
    """Where broker-setup wrote what, under the configuration folder `etc`."""

    etc: Path

    @property
    def conf(self) -> Path:
        return self.etc / "mosquitto.conf"

    @property
    def ca(self) -> SiteCa:
        return SiteCa(self.etc / "certs" / "ca.pem", self.etc / "certs" / "ca.key")

    @property
    def cert(self) -> Path:
        return self.etc / "certs" / "broker.pem"

    @property
    def key(self) -> Path:
        return self.etc / "certs" / "broker.key"

    @property
    def password_file(self) -> Path:
        return self.etc / "kilowatch.passwd"

    @property
    def acl_file(self) -> Path:
        return self.etc / "kilowatch.acl"


@dataclass(frozen=True)
class BrokerSetup:
    files: BrokerFiles
    new_ca: bool
    collector_yaml: str


def _put(path: Path, data: bytes, *, mode: int, gid: int) -> None:
    """Replace `path` atomically with `data`, owned by root:`gid` with `mode` from its creation on."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chown(tmp, 0, gid)
    os.chmod(tmp, mode)
    tmp.replace(path)


ACL_HEADER = """\
# Mosquitto ACL for kilowatch, written by `kilowatch collector broker-setup` (see deploy/mosquitto/kilowatch.acl
# for what each line means). Gateways' blocks are added by `kilowatch collector provision-gateway`.
"""


def setup(
    names: Sequence[str],
    *,
    etc: Path = DEFAULT_ETC,
    group: str = "mosquitto",
    require_certificate: bool = False,
    topic_root: str = TOPIC_ROOT,
) -> BrokerSetup:
    """Write the broker's files under `etc` (see the module); the site CA is made only if there is none."""
    if not names:
        raise ProvisionError("name at least one --broker-host")
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ProvisionError(f"group {group!r} does not exist: apt-get install mosquitto") from None
    if os.geteuid() != 0:
        raise ProvisionError("run it as root: the files belong to root and the broker's group")
    files = BrokerFiles(etc)
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(files.cert.parent, 0o750)  # noqa: S103 - the broker's group must enter it
    os.chown(files.cert.parent, 0, gid)
    new_ca = not files.ca.cert_file.exists()
    if new_ca:
        ca = new_site_ca(CA_NAME)
        _put(files.ca.key_file, ca.key_pem, mode=0o600, gid=0)
        _put(files.ca.cert_file, ca.cert_pem, mode=0o644, gid=0)
    server = issue_server_certificate(names, files.ca)
    _put(files.key, server.key_pem, mode=0o640, gid=gid)
    _put(files.cert, server.cert_pem, mode=0o644, gid=0)

    password = secrets.token_urlsafe(24)
    users = files.password_file.read_text().splitlines() if files.password_file.exists() else []
    users = [*without_user(users, COLLECTOR_USER, acl=False), hashed_entry(COLLECTOR_USER, password)]
    _put(files.password_file, ("\n".join(users) + "\n").encode(), mode=0o640, gid=gid)
    acl = files.acl_file.read_text() if files.acl_file.exists() else ACL_HEADER
    if not re.search(rf"^user {re.escape(COLLECTOR_USER)}$", acl, flags=re.MULTILINE):
        acl = acl.rstrip("\n") + f"\n\n# the collector reads every gateway's topics\nuser {COLLECTOR_USER}\n"
        acl += f"topic read {topic_root}/#\n"
    _put(files.acl_file, acl.encode(), mode=0o640, gid=gid)

    conf = render_conf(conf_template(), etc, require_certificate=require_certificate)
    _put(files.conf, conf.encode(), mode=0o644, gid=0)
    return BrokerSetup(files, new_ca, collector_yaml(password, loopback_port(conf), topic_root))


def collector_yaml(password: str, port: int, topic_root: str) -> str:
    """A valid collector.yaml: the collector's login on the broker's loopback listener and the ledger in the
    unit's state folder; every other key keeps its default (see deploy/collector.example.yaml)."""
    data = {
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "username": COLLECTOR_USER,
            "password": password,
            "client_id": COLLECTOR_USER,
            "topic_root": topic_root,
        },
        "ledger": {"path": str(LEDGER)},
    }
    CollectorConfig.model_validate(data)
    header = (
        "## kilowatch collector, written by `kilowatch collector broker-setup`: its login on the broker's\n"
        "## loopback listener. Add the other sections you need from deploy/collector.example.yaml.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)
