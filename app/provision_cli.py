"""`kilowatch collector provision-gateway` and `revoke-gateway`: the administrator's side of a new gateway
(see :mod:`app.provision`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.provision import ProvisionError, SiteCa, provision, revoke
from kilowatch.cli_support import fail
from kilowatch.mqtt_contract import TOPIC_ROOT

PasswordFile = Annotated[Path, typer.Option(help="Mosquitto's password_file (deploy/mosquitto.conf)")]
AclFile = Annotated[Path, typer.Option(help="Mosquitto's acl_file (deploy/mosquitto.conf)")]
RELOAD = "apply it: sudo systemctl reload mosquitto"


def provision_gateway(
    site: Annotated[str, typer.Argument(help="Site id")],
    gateway: Annotated[str, typer.Argument(help="Gateway id, unique within the site")],
    broker_host: Annotated[
        str, typer.Option(help="The broker's name as gateways reach it (in its certificate)")
    ],
    broker_port: Annotated[int, typer.Option(help="The broker's TLS port")] = 8883,
    out: Annotated[Path, typer.Option(help="Where to write the gateway's agent.yaml (mode 0600)")] = Path(
        "agent.yaml"
    ),
    password_file: PasswordFile = Path("/etc/mosquitto/kilowatch.passwd"),
    acl_file: AclFile = Path("/etc/mosquitto/kilowatch.acl"),
    topic_root: Annotated[str, typer.Option(help="Topic prefix (the agents' mqtt.topic_root)")] = TOPIC_ROOT,
    client_ca_cert: Annotated[
        Path | None, typer.Option(help="Site CA certificate: also issue a client certificate (mutual TLS)")
    ] = None,
    client_ca_key: Annotated[
        Path | None, typer.Option(help="Site CA private key (with --client-ca-cert)")
    ] = None,
) -> None:
    """Create a gateway's broker login (a new random password each time) and ACL entry, and write its
    ready agent.yaml for the technician; with the site CA, also its client certificate and key, beside
    the agent.yaml as NAME.pem and NAME.key."""
    if (client_ca_cert is None) != (client_ca_key is None):
        raise typer.BadParameter("give both or neither", param_hint="--client-ca-cert/--client-ca-key")
    site_ca = SiteCa(client_ca_cert, client_ca_key) if client_ca_cert and client_ca_key else None
    try:
        done = provision(
            site,
            gateway,
            password_file=password_file,
            acl_file=acl_file,
            broker_host=broker_host,
            broker_port=broker_port,
            topic_root=topic_root,
            site_ca=site_ca,
        )
    except ProvisionError as exc:
        fail(f"provision-gateway: {exc}")
    _write_private(out, done.agent_yaml.encode())
    typer.echo(f"gateway {done.user}: login and ACL written; its agent.yaml is {out} (holds the password)")
    if done.certificate is not None:
        _write_private(out.with_suffix(".pem"), done.certificate.cert_pem)
        _write_private(out.with_suffix(".key"), done.certificate.key_pem)
        typer.echo(f"client certificate {out.with_suffix('.pem')} and key {out.with_suffix('.key')}")
    typer.echo(RELOAD)


def _write_private(path: Path, data: bytes) -> None:
    """Write `path` readable by its owner only, from its creation on."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


def revoke_gateway(
    site: Annotated[str, typer.Argument(help="Site id")],
    gateway: Annotated[str, typer.Argument(help="Gateway id")],
    password_file: PasswordFile = Path("/etc/mosquitto/kilowatch.passwd"),
    acl_file: AclFile = Path("/etc/mosquitto/kilowatch.acl"),
) -> None:
    """Remove a gateway's broker login and ACL entry."""
    try:
        found = revoke(site, gateway, password_file=password_file, acl_file=acl_file)
    except ProvisionError as exc:
        fail(f"revoke-gateway: {exc}")
    if not found:
        fail(f"revoke-gateway: {site}.{gateway} has no login or ACL entry in {password_file} / {acl_file}")
    typer.echo(f"gateway {site}.{gateway}: login and ACL entry removed")
    typer.echo(RELOAD)


def broker_setup(
    broker_host: Annotated[
        list[str],
        typer.Option(help="A name (or IP address) gateways reach the broker by; repeat for several"),
    ],
    etc_dir: Annotated[Path, typer.Option(help="Mosquitto's configuration folder")] = Path("/etc/mosquitto"),
    require_certificate: Annotated[
        bool, typer.Option(help="Mutual TLS: the broker demands a client certificate from the site CA")
    ] = False,
    collector_out: Annotated[
        Path,
        typer.Option(help="Where to write the collector's collector.yaml (mode 0600: holds its password)"),
    ] = Path("collector.yaml"),
    group: Annotated[
        str, typer.Option(help="The group the broker runs as (Mosquitto's `user`)")
    ] = "mosquitto",
) -> None:
    """Set up Mosquitto for the collector host: the site CA (made once, then kept), the broker's TLS
    certificate, the password file and ACL with the collector's login (a new password each time), and
    mosquitto.conf (deploy/mosquitto.conf); write a ready collector.yaml with that login."""
    from app.broker_setup import setup

    if collector_out.exists():
        fail(
            f"broker-setup: {collector_out} exists (a collector.yaml you may have extended): give another "
            "--collector-out, then copy its mqtt.password into your collector.yaml"
        )
    try:
        done = setup(broker_host, etc=etc_dir, group=group, require_certificate=require_certificate)
    except ProvisionError as exc:
        fail(f"broker-setup: {exc}")
    files = done.files
    typer.echo(
        f"site CA {files.ca.cert_file} ({'new' if done.new_ca else 'kept'}; its key {files.ca.key_file} is "
        "root's only: give both to provision-gateway --client-ca-cert/--client-ca-key)"
    )
    typer.echo(f"broker certificate {files.cert} for {', '.join(broker_host)}; configuration {files.conf}")
    typer.echo(f"collector login {files.password_file} / {files.acl_file}")
    _write_private(collector_out, done.collector_yaml.encode())
    typer.echo(f"the collector's configuration is {collector_out} (holds its password)")
    typer.echo("apply it: sudo systemctl restart mosquitto")
