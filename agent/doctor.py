"""`kilowatch agent doctor`: check an installed gateway before the technician leaves the site.

Each check says ok, fail (with the fix) or unknown (nothing to ask: no systemd, no NTP client) and never
raises: one broken part must not hide the state of the others. The checks read, never change: the spool
is opened read-only, the broker is visited under the doctor's own client id (the agent's would take over
the running agent's session), each meter gets one poll.
"""

from __future__ import annotations

import asyncio
import grp
import pwd
import shutil
import stat
import subprocess
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel

from agent import spool
from agent.clock import kernel_clock_state
from agent.config import AgentConfig, RtuBus
from agent.errors import AgentError, BusUnavailable
from agent.poller import poll
from agent.runner import open_bus
from kilowatch import yamlconfig
from kilowatch.mqtt_contract import ClockState
from kilowatch.profiles import load_builtin, vector_failures

UNIT = "kilowatch-agent.service"
SERVICE_USER = "kilowatch"
BROKER_TIMEOUT_S = 10.0
METER_TIMEOUT_S = 20.0
"""Longest wait for one meter's poll, beyond its own timeouts and retries."""
BUS_FIX = "check the bus: the serial port (or the converter's host and port) and its cable"
SLOW_FIX = "lower the meter's timing (timeout_s, retries) or check why it answers so slowly"


class Status(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


class Check(BaseModel):
    """One line of the checklist."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


class Report(BaseModel):
    """The checklist; `ok` is false when any check failed (unknown ones do not fail it)."""

    ok: bool
    checks: list[Check]

    @classmethod
    def of(cls, checks: Sequence[Check]) -> Report:
        return cls(ok=all(c.status is not Status.FAIL for c in checks), checks=list(checks))


def ok(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.OK, detail=detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status=Status.FAIL, detail=detail, fix=fix)


def profile_problems(config: AgentConfig) -> tuple[list[str], list[str]]:
    """The profiles the config names, and each of their test vectors it fails to decode."""
    ids = sorted({load_builtin(m.profile).id for bus in config.buses for m in bus.meters})
    return ids, [f for pid in ids for f in vector_failures(load_builtin(pid))]


def _may_read_write(path: Path, user: str) -> str | None:
    """Why `user` cannot open `path` for reading and writing, None when it can (owner, group, other bits)."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return f"there is no user {user}"
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    info = path.stat()
    if account.pw_uid == 0:
        return None
    if info.st_uid == account.pw_uid:
        bits = (info.st_mode & stat.S_IRUSR, info.st_mode & stat.S_IWUSR)
    elif info.st_gid in groups:
        bits = (info.st_mode & stat.S_IRGRP, info.st_mode & stat.S_IWGRP)
    else:
        bits = (info.st_mode & stat.S_IROTH, info.st_mode & stat.S_IWOTH)
    if all(bits):
        return None
    owner = (
        grp.getgrgid(info.st_gid).gr_name
        if info.st_gid in {g.gr_gid for g in grp.getgrall()}
        else info.st_gid
    )
    return f"{user} may not read and write it (mode {stat.filemode(info.st_mode)}, group {owner})"


def check_serial_ports(config: AgentConfig, user: str) -> list[Check]:
    """Each serial port exists and the service user may read and write it."""
    checks = []
    for bus in config.buses:
        if not isinstance(bus, RtuBus):
            continue
        name = f"serial port {bus.port} (bus {bus.name})"
        port = Path(bus.port)
        if not port.exists():
            checks.append(
                fail(
                    name,
                    "no such device",
                    "plug in the RS-485 adapter and check `ls -l /dev/serial/by-id/`; use that stable path "
                    "as the bus's port in agent.yaml",
                )
            )
        elif (why := _may_read_write(port, user)) is not None:
            checks.append(
                fail(
                    name,
                    why,
                    f"add the user to the port's group: `sudo usermod -aG dialout {user}` (install-agent.sh "
                    "does it), or a udev rule giving the adapter to group dialout",
                )
            )
        else:
            checks.append(ok(name, f"exists, {user} may read and write it"))
    return checks


def _meter_problem(failures: Sequence[AgentError], unit: int) -> tuple[str, str]:
    """What went wrong with a meter's poll, and the fix: the line itself, or the meter on it."""
    if down := next((f for f in failures if isinstance(f, BusUnavailable)), None):
        return str(down), BUS_FIX
    return (
        "; ".join(str(f) for f in failures[:1]) or "no value decoded",
        f"check the meter's unit id ({unit}), wiring (A/B, termination), baud rate and parity; "
        "`kilowatch agent scan` finds which units answer",
    )


async def check_meters(config: AgentConfig) -> list[Check]:
    """Each configured meter answers one poll."""
    checks = []
    for bus in config.buses:
        try:
            async with open_bus(bus) as reader:
                for meter in bus.meters:
                    name = f"meter {meter.id} (bus {bus.name}, unit {meter.unit})"
                    profile = load_builtin(meter.profile)
                    try:
                        result = await asyncio.wait_for(
                            poll(reader, profile, meter.unit, ratios=meter.ratios), METER_TIMEOUT_S
                        )
                    except TimeoutError:
                        checks.append(fail(name, f"no answer within {METER_TIMEOUT_S:g} s", SLOW_FIX))
                        continue
                    if result.values:
                        checks.append(ok(name, f"answered: {len(result.values)} value(s)"))
                    else:
                        checks.append(fail(name, *_meter_problem(result.failures, meter.unit)))
        except OSError as exc:
            checks.append(fail(f"bus {bus.name}", str(exc), BUS_FIX))
    return checks


async def check_broker(config: AgentConfig) -> Check:
    """The broker accepts a connection with the configured TLS settings and credentials."""
    import aiomqtt

    settings = config.mqtt
    name = f"broker {settings.address}"
    client = settings.client(
        identifier=f"kilowatch-doctor-{config.site}-{config.gateway}", timeout=BROKER_TIMEOUT_S
    )
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_S), client:
            pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        lowered = detail.lower()
        if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
            fix = "the broker's certificate must be signed by mqtt.tls.ca_file and name mqtt.host (or set mqtt.tls.server_hostname)"
        elif "auth" in lowered or "password" in lowered or "user name" in lowered:
            fix = "ask the administrator for this gateway's credentials (collector provision-gateway) and set mqtt.username / mqtt.password"
        else:
            fix = "check mqtt.host and mqtt.port, the network and the firewall (8883 for TLS, 1883 plain)"
        return fail(name, detail, fix)
    tls = "TLS" if settings.tls is not None else "no TLS"
    login = f"as {settings.username}" if settings.username else "anonymously"
    return ok(name, f"connected ({tls}, {login})")


def _run(*args: str) -> str | None:
    """The output of a command, None when it is missing or cannot answer (no systemd as PID 1)."""
    if shutil.which(args[0]) is None:
        return None
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "has not been booted with systemd" in result.stderr or "Failed to connect to bus" in result.stderr:
        return None
    return result.stdout.strip()


CLOCK_FIX = (
    "enable NTP (`sudo timedatectl set-ntp true`, or chrony) and let the gateway reach an NTP server "
    "(UDP 123); readings stay marked unsynced until then"
)


def check_clock() -> Check:
    """NTP has synchronised the clock: timedatectl, else chrony, else the kernel's adjtimex state."""
    synced = _run("timedatectl", "show", "--property=NTPSynchronized", "--value")
    if synced in ("yes", "no"):
        if synced == "yes":
            return ok("clock", "synchronised (timedatectl)")
        return fail("clock", "not synchronised (timedatectl)", CLOCK_FIX)
    tracking = _run("chronyc", "tracking")
    if tracking:
        if "Leap status     : Normal" in tracking:
            return ok("clock", "synchronised (chrony)")
        return fail("clock", "not synchronised (chrony)", CLOCK_FIX)
    match kernel_clock_state():
        case ClockState.SYNCED:
            return ok("clock", "synchronised (kernel)")
        case ClockState.UNSYNCED:
            return fail("clock", "not synchronised (kernel)", CLOCK_FIX)
        case _:
            return Check(
                name="clock", status=Status.UNKNOWN, detail="no timedatectl, chrony or adjtimex to ask"
            )


def check_spool(config: AgentConfig) -> list[Check]:
    """Room for the spool's bound on its disk, and the spool file passes SQLite's quick check."""
    path = config.spool.path
    folder = path.parent
    checks = []
    if not folder.is_dir():
        return [
            fail(
                "spool space",
                f"no folder {folder}",
                "create it (install-agent.sh makes /var/lib/kilowatch) or fix spool.path",
            )
        ]
    free = shutil.disk_usage(folder).free
    needed = config.spool.max_bytes - (path.stat().st_size if path.exists() else 0)
    if free < needed:
        checks.append(
            fail(
                "spool space",
                f"{free / 2**20:.0f} MiB free on {folder}, the spool may grow by {needed / 2**20:.0f} MiB",
                "free disk space or lower spool.max_bytes in agent.yaml",
            )
        )
    else:
        checks.append(ok("spool space", f"{free / 2**20:.0f} MiB free on {folder}"))
    if not path.exists():
        checks.append(ok("spool integrity", f"{path} not created yet (the agent creates it)"))
        return checks
    result, batches = spool.inspect(path)
    if result != ["ok"]:
        checks.append(
            fail(
                "spool integrity",
                f"{path}: {'; '.join(result[:3])}",
                f"stop the agent, move {path} aside (its unsent batches are lost; keep it for analysis), start "
                "the agent: it creates a new spool",
            )
        )
    else:
        checks.append(ok("spool integrity", f"{path}: quick_check ok, {batches} batch(es) waiting"))
    return checks


def check_unit() -> Check:
    """The agent's systemd unit is running."""
    state = _run("systemctl", "is-active", UNIT)
    if state is None:
        return Check(name="unit", status=Status.UNKNOWN, detail=f"no systemd to ask about {UNIT}")
    if state == "active":
        return ok("unit", f"{UNIT} active")
    return fail(
        "unit",
        f"{UNIT} {state or 'unknown to systemd'}",
        f"`sudo systemctl enable --now {UNIT}`; if it stops again, `journalctl -u {UNIT}` says why",
    )


async def examine(path: Path, *, user: str = SERVICE_USER) -> Report:
    """The checklist for the agent configured by `path`; only the config's own check when it is invalid
    (the others need it)."""
    try:
        config = yamlconfig.load(AgentConfig, path).relative_to(path.parent)
    except yamlconfig.ConfigError as exc:
        return Report.of(
            [
                fail(
                    "config",
                    f"{path}: " + "; ".join(exc.problems),
                    "correct the keys named (file:line key: problem); deploy/agent.example.yaml documents "
                    "every key, `kilowatch agent check --config` re-checks",
                )
            ]
        )
    ids, problems = profile_problems(config)
    config_check = (
        fail(
            "config",
            f"{path}: profile test vectors fail: " + "; ".join(problems),
            "reinstall kilowatch (install-agent.sh); `kilowatch profiles check` lists the problems",
        )
        if problems
        else ok(
            "config",
            f"{path}: site {config.site}, gateway {config.gateway}, {len(config.meter_ids)} meter(s), "
            f"profiles {', '.join(ids) or 'none'}",
        )
    )
    return Report.of([config_check, *await diagnose(config, user=user)])


async def diagnose(config: AgentConfig, *, user: str = SERVICE_USER) -> list[Check]:
    """Every check but the config's own, in checklist order."""
    return [
        *check_serial_ports(config, user),
        *await check_meters(config),
        await check_broker(config),
        check_clock(),
        *check_spool(config),
        check_unit(),
    ]


def render(report: Report) -> str:
    """The checklist for a terminal."""
    marks = {Status.OK: "[ ok ]", Status.FAIL: "[FAIL]", Status.UNKNOWN: "[ ?? ]"}
    lines = []
    for check in report.checks:
        lines.append(f"{marks[check.status]} {check.name}: {check.detail}")
        if check.fix:
            lines.append(f"       fix: {check.fix}")
    failed = sum(c.status is Status.FAIL for c in report.checks)
    lines.append("all checks passed" if report.ok else f"{failed} check(s) failed")
    return "\n".join(lines)
