"""A gateway's broker identity, given and taken back: `kilowatch collector provision-gateway / revoke-gateway`.

A gateway logs in as ``<site>.<gateway>`` (the user names of deploy/mosquitto/kilowatch.acl) with a random
password; the Mosquitto password file gets its hashed entry (hashed by the Debian package's own
``mosquitto_passwd``, so the format is always the broker's), the ACL file a block that lets it write only
``<topic_root>/<site>/<gateway>/#``. With ``use_username_as_clientid`` (deploy/mosquitto.conf) its user name
is also its client id, so no other gateway can take its session. The technician gets a ready agent.yaml
with the credentials. Mosquitto applies both files on ``systemctl reload mosquitto`` (SIGHUP).

The site's certificates are issued here too (with ``cryptography``, imported only when one is made: a gateway's
install has no such dependency): the site CA and the broker's certificate for `broker-setup`
(:mod:`app.broker_setup`), a gateway's client certificate for mutual TLS.

In app/, not collector/: the agent.yaml it writes is validated by the agent's own config model, and the
collector does not import the agent.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from agent.config import AgentConfig
from kilowatch.mqtt_contract import ID_PATTERN, TOPIC_ROOT

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ObjectIdentifier

AGENT_CA_FILE = "/etc/kilowatch/ca.pem"
"""Where the technician puts the broker's CA on the gateway (the agent.yaml written points there)."""
AGENT_CERT_FILE = "/etc/kilowatch/client.pem"
AGENT_KEY_FILE = "/etc/kilowatch/client.key"
"""Where the technician puts the gateway's client certificate and key (mutual TLS)."""
CERT_DAYS = 825
"""Validity of a gateway's client certificate and of the broker's: the longest browsers' rules ever allowed,
renewed by provisioning the gateway again (`broker-setup` again for the broker)."""
CA_DAYS = 3650
"""Validity of the site CA: every gateway trusts it, so replacing it means visiting every gateway."""


class ProvisionError(Exception):
    """Provisioning cannot proceed; the message says why."""


def username(site: str, gateway: str) -> str:
    """The gateway's broker login: unique across sites, unlike the gateway id alone."""
    for kind, value in (("site", site), ("gateway", gateway)):
        if not re.fullmatch(ID_PATTERN, value):
            raise ProvisionError(f"{kind} {value!r} is not an id (pattern {ID_PATTERN})")
    return f"{site}.{gateway}"


def hashed_entry(user: str, password: str) -> str:
    """The password-file line for `user`, hashed by ``mosquitto_passwd -U`` on a private temporary file
    (never on its command line, where `ps` would show the password)."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise ProvisionError("mosquitto_passwd not found: apt-get install mosquitto")
    with tempfile.TemporaryDirectory() as folder:
        plain = Path(folder) / "passwd"
        plain.write_text(f"{user}:{password}\n")
        plain.chmod(0o600)
        result = subprocess.run([tool, "-U", str(plain)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ProvisionError(
                f"mosquitto_passwd -U failed: {result.stderr.strip() or result.stdout.strip()}"
            )
        return plain.read_text().strip()


def _write(path: Path, text: str) -> None:
    """Replace `path` atomically, keeping its mode, owner and group (the broker must still read it)."""
    info = path.stat() if path.exists() else None
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    if info is not None:
        os.chmod(tmp, info.st_mode & 0o7777)
        os.chown(tmp, info.st_uid, info.st_gid)
    else:
        tmp.chmod(0o640)
    tmp.replace(path)


def without_user(lines: list[str], user: str, *, acl: bool) -> list[str]:
    """`lines` of a password file or ACL without `user`'s entry (its ACL block: the ``user`` line, its
    ``topic`` lines and the comment line provisioning put above it)."""
    if not acl:
        return [line for line in lines if line.partition(":")[0] != user]
    out: list[str] = []
    skipping = False
    for line in lines:
        if line.strip() == f"user {user}":
            skipping = True
            if out and out[-1] == _marker(user):
                out.pop()
            continue
        if skipping and line.startswith("topic "):
            continue
        skipping = False
        out.append(line)
    return out


def _marker(user: str) -> str:
    return f"# gateway {user}: added by `kilowatch collector provision-gateway`"


@dataclass(frozen=True)
class SiteCa:
    """The CA that signs the gateways' client certificates (the broker's ``cafile`` must trust it)."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Certificate:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


def issue_client_certificate(user: str, ca: SiteCa, *, days: int = CERT_DAYS) -> Certificate:
    """A client certificate for `user` (its CN, so ``use_identity_as_username`` would give the same login),
    for client authentication only, signed by the site CA, with a new P-256 key (unencrypted: the agent
    starts unattended; the file is 0640 root:kilowatch on the gateway)."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return _issue(user, ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH, days=days)


def issue_server_certificate(names: Sequence[str], ca: SiteCa, *, days: int = CERT_DAYS) -> Certificate:
    """The broker's certificate: every name (host name or IP address) the gateways may connect to, for
    server authentication only, signed by the site CA, with a new P-256 key."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return _issue(names[0], ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, days=days, names=names)


def new_site_ca(name: str, *, days: int = CA_DAYS) -> Certificate:
    """A self-signed CA for the broker's and the gateways' certificates, with a new P-256 key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    usage = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key)


def _issue(
    common_name: str, ca: SiteCa, *, usage: ObjectIdentifier, days: int, names: Sequence[str] = ()
) -> Certificate:
    """A leaf certificate for `common_name` (and `names` as its subject alternative names) signed by `ca`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    try:
        ca_cert = x509.load_pem_x509_certificate(ca.cert_file.read_bytes())
        ca_key = serialization.load_pem_private_key(ca.key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisionError(f"cannot load the site CA {ca.cert_file} / {ca.key_file}: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ProvisionError(f"{ca.key_file}: an EC or RSA CA key is needed")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a gateway clock a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        alternative: list[x509.GeneralName] = []
        for name in names:
            try:
                alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternative.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
    return _pem(builder.sign(ca_key, hashes.SHA256()), key)


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Certificate:
    from cryptography.hazmat.primitives import serialization

    return Certificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


@dataclass(frozen=True)
class Provisioned:
    user: str
    password: str
    agent_yaml: str
    certificate: Certificate | None = None


def provision(
    site: str,
    gateway: str,
    *,
    password_file: Path,
    acl_file: Path,
    broker_host: str,
    broker_port: int = 8883,
    topic_root: str = TOPIC_ROOT,
    site_ca: SiteCa | None = None,
) -> Provisioned:
    """Create (or renew: a new password) the gateway's login and ACL block, with `site_ca` its client
    certificate; its ready agent.yaml."""
    user = username(site, gateway)
    certificate = issue_client_certificate(user, site_ca) if site_ca is not None else None
    password = secrets.token_urlsafe(24)
    entry = hashed_entry(user, password)
    lines = password_file.read_text().splitlines() if password_file.exists() else []
    _write(password_file, "\n".join([*without_user(lines, user, acl=False), entry]) + "\n")
    acl = acl_file.read_text().splitlines() if acl_file.exists() else []
    acl = without_user(acl, user, acl=True)
    while acl and not acl[-1].strip():
        acl.pop()
    block = [_marker(user), f"user {user}", f"topic write {topic_root}/{site}/{gateway}/#"]
    _write(acl_file, "\n".join([*acl, "", *block]) + "\n")
    text = agent_yaml(
        site,
        gateway,
        user,
        password,
        broker_host,
        broker_port,
        topic_root,
        mutual_tls=certificate is not None,
    )
    return Provisioned(user, password, text, certificate)


def agent_yaml(
    site: str,
    gateway: str,
    user: str,
    password: str,
    host: str,
    port: int,
    topic_root: str,
    *,
    mutual_tls: bool,
) -> str:
    """A valid agent.yaml for the gateway: its identity and broker login filled in, the spool where the
    installer puts it, and the sample bus to replace with the gateway's own."""
    examples = AgentConfig.model_fields["buses"].examples
    assert examples, "AgentConfig.buses documents an example"
    data = {
        "site": site,
        "gateway": gateway,
        "mqtt": {
            "host": host,
            "port": port,
            "username": user,
            "password": password,
            "tls": {"ca_file": AGENT_CA_FILE}
            | ({"cert_file": AGENT_CERT_FILE, "key_file": AGENT_KEY_FILE} if mutual_tls else {}),
            "topic_root": topic_root,
        },
        "spool": {"path": "/var/lib/kilowatch/spool.db"},
        "buses": examples[0][:1],
    }
    header = (
        f"## kilowatch agent for gateway {gateway} of site {site}, written by `kilowatch collector "
        "provision-gateway`.\n"
        f"## Copy the broker's CA to {AGENT_CA_FILE}"
        + (
            f", the client certificate and key to {AGENT_CERT_FILE} and {AGENT_KEY_FILE}"
            if mutual_tls
            else ""
        )
        + "; replace the example bus below with this gateway's "
        "buses and meters,\n## then check it on the gateway: kilowatch agent doctor --config "
        "/etc/kilowatch/agent.yaml\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def revoke(site: str, gateway: str, *, password_file: Path, acl_file: Path) -> bool:
    """Remove the gateway's login and ACL block; False when it had neither."""
    user = username(site, gateway)
    found = False
    for path, acl in ((password_file, False), (acl_file, True)):
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        kept = without_user(lines, user, acl=acl)
        if kept != lines:
            found = True
            _write(path, "\n".join(kept) + "\n")
    return found
