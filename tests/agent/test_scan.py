"""Bus scan logic without sockets: who counts as present, and which fingerprint names the model."""

from __future__ import annotations

import errno
import termios

import pytest

from agent.errors import (
    AgentError,
    BusUnavailable,
    CrcError,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    WrongUnit,
)
from agent.scan import (
    identify,
    most_specific_first,
    probe,
    probe_register,
    scan_reader,
    serial_links,
    settings_refusal,
)
from agent.transport import MemoryReader, SerialPortLink, TcpLink
from kilowatch.profiles import FingerprintCheck, Profile, Table, load_builtin
from tests.agent_support import register_map

SDM = load_builtin("eastron-sdm630")
MAINS = {
    "frequency_hz": 50.0,
    "voltage_l1_v": 230.0,
    "power_factor": 0.9,
    "reactive_energy_import_kvarh": 1234.5,
}


class Refusing:
    """A reader whose every read fails with one error."""

    def __init__(self, error: AgentError) -> None:
        self.error = error

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "answer"),
    [
        (ModbusExceptionResponse("b", 1, 0, 2), "exception 2 (illegal data address)"),
        (ModbusExceptionResponse("b", 1, 0, 1), "exception 1 (illegal function)"),
        (
            MalformedResponse("b", 1, 0, "asked for 2 registers, got 1"),
            "bad answer (asked for 2 registers, got 1)",
        ),
        (ModbusExceptionResponse("b", 1, 0, 11), None),  # a TCP gateway saying the unit is not there
        (ModbusExceptionResponse("b", 1, 0, 10), None),
        (ModbusTimeout("b", 1, 0), None),
        (CrcError("b", 1, 0, b"\x01\x02"), None),
        (WrongUnit("b", 1, 0, 9), None),
    ],
)
async def test_a_unit_is_present_when_it_sends_a_valid_answer(error: AgentError, answer: str | None) -> None:
    assert await probe(Refusing(error), 1, probe_register([SDM])) == answer


async def test_a_lost_bus_is_not_a_missing_unit() -> None:
    with pytest.raises(BusUnavailable):
        await probe(Refusing(BusUnavailable("b", "gone")), 1, probe_register([SDM]))


def test_the_probe_reads_the_first_fingerprint_register_whole() -> None:
    assert probe_register([SDM]) == (Table.INPUT, 0x46, 2)  # frequency_hz
    with pytest.raises(ValueError, match="fingerprint"):
        probe_register([SDM.model_copy(update={"fingerprint": []})])


@pytest.mark.parametrize(
    ("values", "model"),
    [
        (MAINS, "eastron-sdm630"),
        (MAINS | {"voltage_l1_v": 0.0}, "eastron-sdm630"),  # an unconnected phase is still an SDM630
        (MAINS | {"frequency_hz": 230.0}, None),  # a map with voltage where the SDM630 has frequency
        (MAINS | {"power_factor": 3.5}, None),
        (MAINS | {"frequency_hz": float("nan")}, None),
        ({"frequency_hz": 50.0, "voltage_l1_v": 230.0}, None),  # power factor refused (exception 2)
    ],
)
async def test_every_check_must_pass(values: dict[str, float], model: str | None) -> None:
    reader = MemoryReader({1: register_map(SDM, values)})
    assert await identify(reader, 1, [SDM]) == model


def _other_model(quantity: str) -> Profile:
    """A profile fingerprinted by one other quantity, to order against the SDM630."""
    check = FingerprintCheck(quantity=quantity, min=0, max=1000)
    return SDM.model_copy(update={"id": f"other-{quantity.replace('_', '-')}", "fingerprint": [check]})


async def test_the_first_profile_that_matches_wins_and_reads_are_shared() -> None:
    reader = MemoryReader({1: register_map(SDM, MAINS)})
    unfingerprinted = SDM.model_copy(update={"id": "plain", "fingerprint": []})
    assert await identify(reader, 1, [unfingerprinted, SDM, _other_model("frequency_hz")]) == "eastron-sdm630"
    assert await identify(reader, 1, [_other_model("frequency_hz"), SDM]) == "other-frequency-hz"
    assert await identify(reader, 1, [_other_model("energy_import_kwh"), SDM]) == "eastron-sdm630"
    frequency_reads = [r for r in reader.requests if r[1] == 0x46]
    assert len(frequency_reads) == 3  # once per identify call, however many profiles check it


async def test_scan_reader_reports_present_units_with_their_model_and_progress() -> None:
    reader = MemoryReader({2: register_map(SDM, MAINS), 4: {}})
    done: list[int] = []
    found = await scan_reader(reader, "mem", [1, 2, 3, 4], [SDM], done.append)
    assert [(f.unit, f.model, f.answer) for f in found] == [
        (2, "eastron-sdm630", "registers"),
        (4, None, "exception 2 (illegal data address)"),
    ]
    assert done == [1, 1, 1, 1]


def test_serial_links_try_every_baud_and_parity() -> None:
    links = serial_links("/dev/ttyUSB0", [9600, 19200], ["N", "E"])
    assert [str(link) for link in links] == [
        "/dev/ttyUSB0 at 9600 8N1",
        "/dev/ttyUSB0 at 9600 8E1",
        "/dev/ttyUSB0 at 19200 8N1",
        "/dev/ttyUSB0 at 19200 8E1",
    ]


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (termios.error(22, "Invalid argument"), "the port refuses 9600 baud 8E1 (Invalid argument)"),
        (ValueError("Not a valid parity: 'X'"), "the port refuses 9600 baud 8E1 (Not a valid parity: 'X')"),
        (
            OSError(errno.EINVAL, "Invalid baud rate"),
            "the port refuses 9600 baud 8E1 ([Errno 22] Invalid baud rate)",
        ),
        (OSError(errno.ENOENT, "No such file"), None),
        (OSError(errno.EAGAIN, "Could not exclusively lock port"), None),
        (None, None),
    ],
)
def test_only_refused_settings_skip_a_combination(exc: BaseException | None, reason: str | None) -> None:
    link = SerialPortLink(device="/dev/ttyUSB0", baud=9600, parity="E")
    assert settings_refusal(link, exc) == reason
    assert settings_refusal(TcpLink("h", 502), exc) is None


async def test_a_scan_tries_the_sharpest_fingerprint_first() -> None:
    """A sibling whose map answers the SDM630's range checks too is named by its own model code."""
    coded = SDM.model_copy(
        update={
            "id": "coded-sibling",
            "fingerprint": [FingerprintCheck(quantity="frequency_hz", equals=50.0), *SDM.fingerprint],
        }
    )
    assert [p.id for p in most_specific_first([SDM, coded])] == ["coded-sibling", "eastron-sdm630"]
    reader = MemoryReader({1: register_map(SDM, MAINS)})
    found = await scan_reader(reader, "memory", [1], [SDM, coded], lambda _: None)
    assert [f.model for f in found] == ["coded-sibling"]
