"""Bus scan: which unit ids answer on a line, at which serial settings, and which model each one is.

A technician facing an unknown RS-485 line knows neither the baud rate, the parity nor the unit ids. The
scan tries every combination asked for, probes each unit with one cheap read and a short timeout, and
fingerprints the units that answered against the shipped profiles (see ``Profile.fingerprint``).

A unit is *present* when it sends a valid answer: registers, or a Modbus exception (a meter with another
register map refuses the probe's address, but it is there). Gateway exceptions 10 and 11 are the gateway
saying the unit is *not* there. Silence, a garbled frame or another unit's answer are not presence.
"""

from __future__ import annotations

import errno
import termios
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from agent.errors import (
    GATEWAY_FAILURES,
    MODBUS_EXCEPTION_NAMES,
    AgentError,
    BusUnavailable,
    MalformedResponse,
    ModbusExceptionResponse,
)
from agent.transport import (
    Link,
    ModbusReader,
    RegisterReader,
    SerialPortLink,
    serial_open_problem,
)
from kilowatch.profiles import REFUSED, Answer, Profile, Table

CONNECT_TIMEOUT_S = 3.0
"""Opening the link may take longer than a unit's answer (a serial server across a network)."""

Progress = Callable[[int], None]
"""Told how many unit probes were just done (or skipped), to drive a progress bar."""


class Found(BaseModel):
    """A unit that answered, and the model its fingerprint matched (None: no shipped profile matched)."""

    transport: str = Field(description="Where and how it answered, e.g. '/dev/ttyUSB0 at 9600 8N1'")
    unit: int = Field(description="Modbus unit id")
    model: str | None = Field(description="Id of the first profile whose fingerprint matched")
    answer: str = Field(description="What the probe got back: 'registers', or the exception or bad answer")


class Skipped(BaseModel):
    """A combination of serial settings that could not be tried."""

    transport: str
    reason: str


class ScanReport(BaseModel):
    found: list[Found] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)


def serial_links(device: str, bauds: Sequence[int], parities: Sequence[str]) -> list[SerialPortLink]:
    """Every baud x parity combination on `device`, in the order given (8 data bits, 1 stop bit)."""
    return [SerialPortLink(device=device, baud=b, parity=p) for b in bauds for p in parities]


def settings_refusal(link: Link, exc: BaseException | None) -> str | None:
    """Why the port refused `link`'s settings, if that is what `exc` says (None: another problem)."""
    if not isinstance(link, SerialPortLink):
        return None
    if isinstance(exc, termios.error) and exc.args:
        detail = str(exc.args[-1])  # termios.error carries (errno, text)
    elif isinstance(exc, ValueError) or (isinstance(exc, OSError) and exc.errno == errno.EINVAL):
        detail = str(exc)
    else:
        return None
    return f"the port refuses {link.baud} baud {link.bytesize}{link.parity}{link.stopbits} ({detail})"


def refused_settings(link: SerialPortLink) -> str | None:
    """Why the port refuses `link`'s settings, or None if it opens with them.

    Raises:
        BusUnavailable: the port cannot be used at all (missing, busy, forbidden), whatever the settings.
    """
    exc = link.try_open()
    if exc is None:
        return None
    reason = settings_refusal(link, exc)
    if reason is None:
        raise BusUnavailable(link.device, f"{link.device}: {serial_open_problem(exc)}") from exc
    return reason


def probe_register(profiles: Sequence[Profile]) -> tuple[Table, int, int]:
    """The read every unit is probed with: that of the first value check of the first profile with one."""
    for profile in profiles:
        for check in profile.fingerprint:
            if check.refuses is None:
                return profile.check_read(check)
    raise ValueError("none of the profiles has a fingerprint to scan with")


async def probe(reader: RegisterReader, unit: int, read: tuple[Table, int, int]) -> str | None:
    """What `unit` answered to one `read` (table, address, count), or None if it is not there."""
    try:
        await reader.read(*read, unit)
    except ModbusExceptionResponse as exc:
        if exc.code in GATEWAY_FAILURES:
            return None
        return f"exception {exc.code} ({MODBUS_EXCEPTION_NAMES.get(exc.code, 'unknown exception')})"
    except MalformedResponse as exc:
        return f"bad answer ({exc.reason})"
    except BusUnavailable:
        raise
    except AgentError:
        return None
    return "registers"


async def identify(reader: RegisterReader, unit: int, profiles: Sequence[Profile]) -> str | None:
    """Id of the first profile whose every fingerprint check passes (see ``Profile.passes``), or None."""
    cache: dict[tuple[Table, int, int], Answer] = {}

    async def answer(read: tuple[Table, int, int]) -> Answer:
        if read not in cache:
            try:
                cache[read] = await reader.read(*read, unit)
            except BusUnavailable:
                raise
            except ModbusExceptionResponse as exc:
                cache[read] = None if exc.code in GATEWAY_FAILURES else REFUSED
            except AgentError:
                cache[read] = None
        return cache[read]

    for profile in profiles:
        if not profile.fingerprint:
            continue
        for check in profile.fingerprint:
            if not profile.passes(check, await answer(profile.check_read(check))):
                break
        else:
            return profile.id
    return None


def most_specific_first(profiles: Sequence[Profile]) -> list[Profile]:
    """`profiles` in the order a scan should try them: those that read an exact identification value first,
    then those that expect a refusal, then by number of checks (a stable sort keeps the given order otherwise).

    A model whose map is a superset of another's passes the other's range checks too; trying the profile
    with the sharper fingerprint first names the meter right (a PM5000 checks its model code, an iEM3000
    only ranges on the same block).
    """

    def sharpness(profile: Profile) -> tuple[int, int, int]:
        checks = profile.fingerprint
        exact = sum(1 for c in checks if c.equals is not None)
        refusals = sum(1 for c in checks if c.refuses is not None)
        return (-exact, -refusals, -len(checks))

    return sorted(profiles, key=sharpness)


async def scan_reader(
    reader: RegisterReader,
    transport: str,
    units: Sequence[int],
    profiles: Sequence[Profile],
    progress: Progress,
) -> list[Found]:
    """Probe `units` one after the other on one reader and fingerprint those that answer."""
    read = probe_register(profiles)
    ranked = most_specific_first(profiles)
    found = []
    for unit in units:
        answer = await probe(reader, unit, read)
        if answer is not None:
            model = await identify(reader, unit, ranked)
            found.append(Found(transport=transport, unit=unit, model=model, answer=answer))
        progress(1)
    return found


async def scan(
    links: Sequence[Link],
    units: Sequence[int],
    profiles: Sequence[Profile],
    *,
    timeout_s: float = 0.2,
    progress: Progress = lambda _: None,
) -> ScanReport:
    """Scan `units` on each link in turn (one request on the wire at a time).

    A serial combination the port refuses (a parity a USB adapter lacks) is skipped with its reason.

    Raises:
        BusUnavailable: a port is missing or busy, or a TCP endpoint refuses the connection.
    """
    probe_register(profiles)  # refuse profiles without fingerprints before opening anything
    report = ScanReport()
    for link in links:
        reason = refused_settings(link) if isinstance(link, SerialPortLink) else None
        if reason is not None:
            progress(len(units))
        else:
            reason = await _scan_link(link, units, profiles, timeout_s, progress, report)
        if reason is not None:
            report.skipped.append(Skipped(transport=str(link), reason=reason))
    return report


async def _scan_link(
    link: Link,
    units: Sequence[int],
    profiles: Sequence[Profile],
    timeout_s: float,
    progress: Progress,
    report: ScanReport,
) -> str | None:
    """Scan one link into `report`; the reason if the port refused its settings after all.

    Some drivers accept settings on one open and refuse them on the next (pseudo-terminals do with
    parity), so the refusal is also recognised when the reader opens the port.
    """
    done = 0

    def counted(n: int) -> None:
        nonlocal done
        done += n
        progress(n)

    reader = ModbusReader(
        link,
        bus=str(link),
        timeout_s=max(timeout_s, CONNECT_TIMEOUT_S),
        unit_timeouts=dict.fromkeys(units, timeout_s),
    )
    try:
        async with reader:
            report.found += await scan_reader(reader, str(link), units, profiles, counted)
    except BusUnavailable as exc:
        reason = settings_refusal(link, exc.__cause__)
        if reason is None:
            raise
        progress(len(units) - done)
        return reason
    return None
