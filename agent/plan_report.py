"""What ``kilowatch agent plan`` and ``agent check`` report: each meter's requests and the bus time they cost.

The estimate uses the bus's serial settings when it has them (RTU buses, RTU-over-TCP converters with a
known baud rate), otherwise each meter's profile connection defaults, labelled as an assumption. A Modbus
TCP bus gets no estimate: a meter with Ethernet answers in milliseconds, and the serial line behind a
TCP-to-RS-485 gateway is not something the agent can see (the serial model there was off by 30 times);
its plan still lists the requests and their bytes, and it never counts as over its poll interval.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.bus_time import RtuTiming, SerialLine, rtu_read_bytes, tcp_read_bytes
from agent.config import AgentConfig, Bus
from agent.planner import plan, plan_time_s
from kilowatch.profiles import Profile

BaudSource = Literal["bus", "profile", "assumed", "none"]
"""``bus``: the bus sets it; ``profile``: the agent opens its serial port at the profile's default;
``assumed``: the line is behind a converter whose rate the config does not give; ``none``: Modbus TCP, no
serial line is modelled."""
TCP_LINE = "Modbus TCP"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class RequestPlan(_Out):
    function: int = Field(description="Modbus function code (3 holding, 4 input registers)")
    start: str = Field(description="First wire address, hexadecimal")
    count: int = Field(description="Registers read")
    quantities: list[str] = Field(description="Quantities (and parameters) decoded from the answer")
    request_bytes: int = Field(description="Bytes sent, in the bus's framing")
    response_bytes: int = Field(description="Bytes received, in the bus's framing")
    time_s: float | None = Field(description="Estimated line time of this request; null on Modbus TCP")


class MeterPlan(_Out):
    id: str
    unit: int
    profile: str
    line: str = Field(description="Serial format the estimate assumes, e.g. '9600 8N1', or 'Modbus TCP'")
    baud_source: BaudSource = Field(description="Where the baud rate of the estimate comes from")
    pause_s: float = Field(description="Pause kept before each request, included in time_s")
    requests: list[RequestPlan]
    time_s: float | None = Field(
        description="Estimated line time of one poll of this meter; null on Modbus TCP"
    )


class BusPlan(_Out):
    name: str
    transport: str
    meters: list[MeterPlan]
    time_s: float | None = Field(description="Estimated line time of one poll cycle of every meter")
    poll_interval_s: float
    share: float | None = Field(
        description="time_s / poll_interval_s; above 1 the poll interval cannot be kept; null on Modbus TCP"
    )

    @property
    def over_budget(self) -> bool:
        return self.share is not None and self.share > 1

    @property
    def known_line(self) -> bool:
        """Whether every estimate uses the rate the line really runs at rather than a guess."""
        return all(m.baud_source != "assumed" for m in self.meters)


class AgentPlan(_Out):
    turnaround_s: float = Field(description="Slave turnaround assumed per request")
    buses: list[BusPlan]


def bus_line(bus: Bus, profile: Profile) -> tuple[SerialLine, BaudSource]:
    """The line one meter of `bus` is on and where its baud rate comes from.

    Read leniently (``getattr``) because only serial kinds of bus have a ``line`` and a ``baud``.
    """
    line: SerialLine | None = getattr(bus, "line", None)
    if line is None:  # only the RTU-over-TCP and RTU kinds of bus reach here
        return SerialLine.of(profile.connection), "assumed"
    if getattr(bus, "baud", None) is not None:
        return line, "bus"
    # The agent opens its own serial port at the profiles' rate; a converter's rate is only a guess.
    return line, "profile" if bus.transport == "rtu" else "assumed"


def agent_plan(config: AgentConfig, *, turnaround_s: float) -> AgentPlan:
    """Plan every meter of `config` and estimate each bus's line time per poll cycle."""
    buses = []
    for bus in config.buses:
        tcp = bus.transport == "tcp"
        frame = tcp_read_bytes if tcp else rtu_read_bytes
        meters = []
        for meter in bus.meters:
            profile = bus.profile_of(meter)
            line, source = bus_line(bus, profile) if not tcp else (SerialLine.of(profile.connection), "none")
            timing = RtuTiming(
                line=line, turnaround_s=turnaround_s, pause_s=bus.timing_of(meter).pause_between_requests_s
            )
            requests = plan(profile, timing=timing)  # the planner's ranking, as the bus worker plans it
            meters.append(
                MeterPlan(
                    id=meter.id,
                    unit=meter.unit,
                    profile=profile.id,
                    line=TCP_LINE if tcp else str(line),
                    baud_source=source,
                    pause_s=timing.pause_s,
                    requests=[
                        RequestPlan(
                            function=r.table.function_code,
                            start=f"0x{r.address:04X}",
                            count=r.count,
                            quantities=[reg.label for reg in r.registers],
                            request_bytes=frame(r.count)[0],
                            response_bytes=frame(r.count)[1],
                            time_s=None if tcp else timing.read_s(r.count),
                        )
                        for r in requests
                    ],
                    time_s=None if tcp else plan_time_s(requests, timing),
                )
            )
        total = None if tcp else sum(m.time_s or 0.0 for m in meters)
        buses.append(
            BusPlan(
                name=bus.name,
                transport=bus.transport,
                meters=meters,
                time_s=total,
                poll_interval_s=config.poll_interval_s,
                share=None if total is None else total / config.poll_interval_s,
            )
        )
    return AgentPlan(turnaround_s=turnaround_s, buses=buses)


SOURCE_LABELS: dict[BaudSource, str] = {
    "bus": "baud from the bus",
    "profile": "baud from the profile's connection",
    "assumed": "baud assumed from the profile's connection",
    "none": "no line-time estimate",
}


def render(agent: AgentPlan) -> list[str]:
    """The plan as text lines for a terminal."""
    lines = [f"turnaround assumed per request: {agent.turnaround_s * 1000:g} ms"]
    for bus in agent.buses:
        lines.append(f"bus {bus.name} ({bus.transport})")
        for meter in bus.meters:
            where = SOURCE_LABELS[meter.baud_source]
            lines.append(f"  meter {meter.id}: unit {meter.unit}, {meter.profile}, {meter.line} ({where})")
            for r in meter.requests:
                took = "" if r.time_s is None else f" {r.time_s * 1000:7.1f} ms"
                lines.append(
                    f"    FC{r.function:02d} {r.start} x{r.count:<3d}{took}  " + ", ".join(r.quantities)
                )
            registers = sum(r.count for r in meter.requests)
            if meter.time_s is None:
                lines.append(f"    {len(meter.requests)} requests, {registers} registers per poll")
                continue
            pauses = f" including {meter.pause_s * 1000:g} ms pause per request" if meter.pause_s else ""
            lines.append(
                f"    {len(meter.requests)} requests, {registers} registers, {meter.time_s * 1000:.1f} ms per "
                f"poll{pauses}"
            )
        requests = sum(len(m.requests) for m in bus.meters)
        if bus.time_s is None or bus.share is None:
            lines.append(
                f"  bus total {requests} requests per cycle; no line-time estimate on Modbus TCP (a serial line "
                "behind a gateway: describe it as rtu-over-tcp with its baud for one)"
            )
        else:
            lines.append(
                f"  bus total {requests} requests, {bus.time_s * 1000:.1f} ms per cycle, {bus.share:.1%} of the "
                f"{bus.poll_interval_s:g} s poll interval"
            )
    return lines


def over_budget_message(bus: BusPlan) -> str:
    return (
        f"bus {bus.name}: one poll cycle takes an estimated {bus.time_s or 0:.3g} s, longer than the "
        f"{bus.poll_interval_s:g} s poll interval"
    )
