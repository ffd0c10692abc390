"""`kilowatch demo`: the whole path on one machine with embedded defaults.

Simulator (3 SDM630 meters over Modbus TCP) -> agent -> MQTT broker -> collector (SQLite, no TSDB, detection
on) -> API and web app on loopback. The site's past week arrives first, as the gateway's backlog
(:mod:`app.demo_history`), so the web app opens on a site with a typical day and last night's alert. Each part runs as its own process with the same commands a real installation uses, so the demo
exercises the product, not a shortcut. Mosquitto is used when installed; otherwise an embedded broker (amqtt,
MQTT 3.1.1) stands in and the demo says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
import yaml

from app.demo_history import (
    DAYS,
    GATEWAY,
    INTERVAL_S,
    METERS,
    PROFILE,
    SITE,
    WASTE,
    history,
    publish,
    write_scenario,
)
from app.processes import (
    UNBOUNDED_QUEUE,
    Children,
    Mosquitto,
    find_binary,
    free_port,
    get_json,
    port_or_free,
    wait_for,
)
from kilowatch.cli_support import fail

MAIN = "main"


class BrokerChoice(StrEnum):
    AUTO = "auto"
    MOSQUITTO = "mosquitto"
    EMBEDDED = "embedded"


@contextlib.asynccontextmanager
async def _embedded_broker(port: int) -> AsyncIterator[None]:
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    try:
        yield
    finally:
        await broker.shutdown()


def _write_configs(
    workdir: Path, *, broker_port: int, modbus_port: int, api_port: int, protocol: str, poll_s: float
) -> tuple[Path, Path]:
    """The agent's and the collector's configuration files, and the detection's sites file."""
    mqtt = {"host": "127.0.0.1", "port": broker_port, "protocol": protocol}
    agent = {
        "site": SITE,
        "gateway": GATEWAY,
        "poll_interval_s": poll_s,
        "mqtt": mqtt,
        # Simulator, agent and collector share this machine's clock, so the readings' times agree with each
        # other whether or not NTP has synchronised it (on a real gateway, leave the mode on auto).
        "clock": {"mode": "synced"},
        "buses": [
            {
                "name": "sim-tcp",
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "meters": [
                    {"id": name, "profile": PROFILE, "unit": spec["unit"]} for name, spec in METERS.items()
                ],
            }
        ],
    }
    sites = {
        "sites": {
            SITE: {
                # What the detectors expect of the readings: the history's pace (the live agent's is faster).
                "poll_s": INTERVAL_S,
                "meters": {
                    name: {
                        "role": "office_main" if spec.get("role") == "main" else "sub_meter",
                        "rated_kw": spec["rated_kw"],
                    }
                    for name, spec in METERS.items()
                },
            }
        }
    }
    collector = {
        "mqtt": {**mqtt, "client_id": "kilowatch-demo-collector"},
        "ledger": {"path": str(workdir / "ledger.db")},
        "api": {"host": "127.0.0.1", "port": api_port},
        # The week's backlog arrives while detection runs: judged by the wall clock, its meters would look
        # silent until the last of it is in.
        "detection": {
            "enabled": True,
            "sites": str(workdir / "sites.yaml"),
            "interval_s": 2,
            "clock": "data",
        },
    }
    (workdir / "sites.yaml").write_text(yaml.safe_dump(sites, sort_keys=False))
    agent_path, collector_path = workdir / "agent.yaml", workdir / "collector.yaml"
    agent_path.write_text(yaml.safe_dump(agent, sort_keys=False))
    collector_path.write_text(yaml.safe_dump(collector, sort_keys=False))
    return agent_path, collector_path


DEMO_USER = "admin"
DEMO_KEY = "demo"


def _credentials(ledger: Path) -> tuple[str, str]:
    """A fresh password for the admin user `DEMO_USER` and a new admin API key (the previous run's demo
    keys are revoked): (password, key). The collector's modules are imported here: the `kilowatch` command
    of an agent-only install (no argon2, no numpy) imports this module too."""
    from collector.access import Access, AccessError, Role
    from collector.store.access import AccessStore

    password = secrets.token_urlsafe(12)
    now_ms = time.time_ns() // 1_000_000
    with AccessStore(ledger) as store:
        access = Access(store)
        try:
            access.add_user(DEMO_USER, password, Role.ADMIN, None, now_ms)
        except AccessError:
            access.set_password(DEMO_USER, password)
        for old in store.api_keys():
            if old.name == DEMO_KEY and old.revoked_at is None:
                access.revoke_key(old.id, now_ms)
        _, key = access.create_key(DEMO_KEY, Role.ADMIN, None, now_ms)
    return password, key


async def _run(
    workdir: Path,
    broker: BrokerChoice,
    api_port: int,
    duration: float | None,
    poll_s: float,
) -> None:
    mosquitto = broker is not BrokerChoice.EMBEDDED and find_binary("mosquitto") is not None
    if broker is BrokerChoice.MOSQUITTO and not mosquitto:
        fail("--broker mosquitto: mosquitto is not installed (apt-get install mosquitto)")
    children = Children(workdir)
    kilowatch = [sys.executable, "-m", "app"]
    async with contextlib.AsyncExitStack() as stack:
        if mosquitto:
            started = await asyncio.to_thread(Mosquitto.start, workdir, extra_conf=UNBOUNDED_QUEUE)
            children.add(started.process)
            broker_port = started.port
            typer.echo(f"broker     mosquitto on 127.0.0.1:{broker_port}")
        else:
            broker_port = free_port()
            await stack.enter_async_context(_embedded_broker(broker_port))
            typer.echo(
                f"broker     mosquitto is not installed: using the embedded amqtt broker (MQTT 3.1.1) on "
                f"127.0.0.1:{broker_port}; install mosquitto for the real thing"
            )
        stack.push_async_callback(children.stop)
        modbus_port, api_port = free_port(), port_or_free(api_port)
        agent_cfg, collector_cfg = _write_configs(
            workdir,
            broker_port=broker_port,
            modbus_port=modbus_port,
            api_port=api_port,
            protocol="5" if mosquitto else "3.1.1",
            poll_s=poll_s,
        )
        ledger = workdir / "ledger.db"
        # Each run starts afresh: its history ends where this run's live readings begin.
        for stale in (ledger, workdir / "ledger.db-wal", workdir / "ledger.db-shm"):
            stale.unlink(missing_ok=True)
        start = datetime.now(UTC).replace(microsecond=0)
        today = start.astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).date()
        backlog = await asyncio.to_thread(
            history, write_scenario(workdir / "scenario-history.yaml", history=True), today, start
        )
        password, key = await asyncio.to_thread(_credentials, ledger)
        children.start("collector", *kilowatch, "collector", "run", "--config", str(collector_cfg))
        base = f"http://127.0.0.1:{api_port}"
        await wait_for(
            "the collector's API", lambda: get_json(f"{base}/healthz")["mqtt_connected"], children, 60
        )
        await publish(backlog, host="127.0.0.1", port=broker_port, protocol="5" if mosquitto else "3.1.1")
        typer.echo(f"history    {DAYS} days of {SITE} sent as {GATEWAY}'s backlog ({len(backlog)} batches)")
        children.start(
            "sim",
            *kilowatch,
            "sim",
            "serve",
            "--scenario",
            str(write_scenario(workdir / "scenario-live.yaml", history=False)),
            "--start",
            start.isoformat(),
            "--days",
            "1",
            "--tcp",
            f"127.0.0.1:{modbus_port}",
        )
        typer.echo(f"simulator  {len(METERS)} x {PROFILE} on Modbus TCP 127.0.0.1:{modbus_port}")
        children.start("agent", *kilowatch, "agent", "run", "--config", str(agent_cfg))
        meters = await wait_for(
            "live readings from all meters", lambda: _live(base, key, start), children, 60 + 3 * poll_s
        )
        alert = await wait_for("the after-hours alert", lambda: _waste_alert(base, key), children, 120)
        typer.echo(f"collector  ledger {workdir / 'ledger.db'} (SQLite, no TSDB); logs in {workdir}/")
        yesterday = today - timedelta(days=1)
        typer.echo(
            f"\n{len(meters)} meters reporting. The web app (log in below):\n  {base}/sites/{SITE}?day={yesterday}"
            f"\n    yesterday's load against a typical day; {WASTE['meter']}'s air conditioning has been on "
            f"since {WASTE['from']}: alert #{alert['id']}, {alert['wasted_kwh']:.0f} kWh wasted so far, about "
            f"{alert['cost_vnd']:,.0f} VND\n  {base}/  every site today\n  {base}/alerts/{alert['id']}"
            "  the alert (acknowledge or silence it while it is open)\nThe API:"
        )
        for path in (
            "/api/v1/meters",
            f"/api/v1/meters/{MAIN}/latest",
            f"/api/v1/meters/{MAIN}/intervals",
            "/docs",
            "/metrics",
            "/healthz",
        ):
            typer.echo(f"  {base}{path}")
        typer.echo(
            f"\nLog in to the web app as {DEMO_USER!r} with password {password!r}; API calls need the admin key"
            f" (shown once, new each run):\n  curl -H 'Authorization: Bearer {key}' {base}/api/v1/meters"
            f"\nMore users and keys: kilowatch collector users|keys ... --config {collector_cfg}"
        )
        typer.echo("\nCtrl-C stops everything." if duration is None else f"\nStopping in {duration:.0f}s.")
        await _watch(base, MAIN, key, children, duration, poll_s)


def _live(base: str, key: str, since: datetime) -> list[dict[str, Any]] | None:
    """Every meter, once each has a reading from the live simulator (after the history's end)."""
    meters: list[dict[str, Any]] = get_json(f"{base}/api/v1/meters", key=key)
    live = [m for m in meters if datetime.fromisoformat(m["last_seen"]) > since]
    return live if len(live) == len(METERS) else None


def _waste_alert(base: str, key: str) -> dict[str, Any] | None:
    """The after-hours alert of the meter left on, once detection has raised it."""
    found: list[dict[str, Any]] = get_json(
        f"{base}/api/v1/alerts?detector=after_hours&meter={WASTE['meter']}", key=key
    )
    return found[-1] if found else None


async def _watch(
    base: str, meter: str, key: str, children: Children, duration: float | None, poll_s: float
) -> None:
    """Print the main meter's power now and then, until the duration is up or a part dies."""
    stop_at = None if duration is None else time.monotonic() + duration
    while stop_at is None or time.monotonic() < stop_at:
        if dead := children.dead():
            raise RuntimeError(f"{', '.join(dead)} exited unexpectedly; see its log in {children.workdir}")
        shown = False
        with contextlib.suppress(OSError, ValueError, KeyError):
            latest = get_json(f"{base}/api/v1/meters/{meter}/latest", key=key)
            values = latest["values"]
            at = datetime.fromisoformat(latest["ts"])  # to the second: the API gives ms when there are some
            typer.echo(
                f"{at:%Y-%m-%d %H:%M:%S} UTC  {meter}: {values['active_power_w'] / 1000:.2f} kW, "
                f"{values['energy_import_kwh']:.3f} kWh imported"
            )
            shown = True
        # A busy machine can make one call time out: ask again soon rather than stay silent for seconds.
        await asyncio.sleep(max(poll_s, 5.0) if shown else 0.5)


def demo(
    workdir: Annotated[Path, typer.Option(help="Where configs, logs and the SQLite ledger go")] = Path(
        "var/demo"
    ),
    broker: Annotated[
        BrokerChoice, typer.Option(help="auto: Mosquitto if installed, else the embedded broker")
    ] = BrokerChoice.AUTO,
    api_port: Annotated[int, typer.Option(help="API port on 127.0.0.1 (a free one if taken)")] = 8000,
    poll_interval: Annotated[float, typer.Option(help="Agent poll interval, seconds")] = 2.0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C)")
    ] = None,
) -> None:
    """Run simulator, broker, agent, collector and API together on loopback, and print the URLs."""
    workdir.mkdir(parents=True, exist_ok=True)
    Children.stopped_on_sigterm()
    try:
        asyncio.run(_run(workdir, broker, api_port, duration, poll_interval))
    except KeyboardInterrupt:
        typer.echo("stopped")
    except (RuntimeError, TimeoutError) as exc:
        fail(f"demo failed: {exc}")
