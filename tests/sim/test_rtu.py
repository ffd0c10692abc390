"""The simulator on an RTU line (a socat pseudo-terminal pair) and RTU-over-TCP, with faulty units.

Judged by pymodbus' serial and TCP clients, by mbpoll (libmodbus, a third-party master) and, where the
point is what goes on the wire, by raw bytes read off the line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TypedDict, Unpack

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadInputRegistersRequest

from kilowatch.profiles import Table, load_builtin
from sim.faults import Fault, FaultKind
from sim.register_image import ExceptionCode
from sim.server import FRAME_GAP_S, Parity, SimServer, SimServerError
from tests.mbpoll import MbpollError, read_floats_rtu
from tests.serial_link import SerialLink, virtual_com_port

SDM630 = load_builtin("eastron-sdm630")
MONDAY_AFTERNOON = datetime.fromisoformat("2025-03-03T14:00:00+07:00")
VOLTAGES = ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")
PHASE_BLOCK = (0x0000, 18)
"""Voltages, currents and active powers of L1-L3: one request."""

pytestmark = pytest.mark.services


class LineOptions(TypedDict, total=False):
    """The options of :class:`SimServer` these tests vary: how the line is served and how units misbehave."""

    port: int
    rtu: str
    baud: int
    parity: Parity
    rtu_over_tcp: bool
    faults: Mapping[int, Fault]


def still_sim(units: list[int], **line: Unpack[LineOptions]) -> SimServer:
    """Meters whose registers hold still for an hour, so every reader sees the same window."""
    return SimServer(
        profile=SDM630,
        units=units,
        seed=7,
        update_interval=3600,
        start=MONDAY_AFTERNOON,
        **line,
    )


async def read_block(
    client: AsyncModbusSerialClient | AsyncModbusTcpClient, unit: int
) -> dict[str, float | None]:
    address, count = PHASE_BLOCK
    response = await client.read_input_registers(address, count=count, device_id=unit)
    assert not response.isError(), (unit, response)
    return SDM630.decode_words({address: list(response.registers)}, Table.INPUT)


def model_block(sim: SimServer, unit: int) -> dict[str, float]:
    address, count = PHASE_BLOCK
    shown = sim.values(unit)
    return {
        r.quantity: shown[r.quantity]
        for r in SDM630.registers
        if r.table is Table.INPUT and address <= r.address < address + count
    }


@pytest.fixture
async def master(serial_link: SerialLink) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(str(serial_link.b), baudrate=9600, parity="N", timeout=0.5, retries=0)
    assert await client.connect()
    yield client
    client.close()


async def test_mbpoll_reads_the_rtu_line_and_agrees_with_the_model(serial_link: SerialLink) -> None:
    async with still_sim([1, 2, 3], rtu=str(serial_link.a)) as sim:
        assert sim.endpoint == f"rtu {serial_link.a} at 9600 8N1"
        for unit in (1, 3):
            voltages = await asyncio.to_thread(read_floats_rtu, str(serial_link.b), unit, 0x0000, 3)
            energy = await asyncio.to_thread(read_floats_rtu, str(serial_link.b), unit, 0x0048, 2)
            shown = sim.values(unit)
            assert voltages == pytest.approx([shown[q] for q in VOLTAGES], rel=1e-5)  # 6 digits printed
            assert energy == pytest.approx([shown["energy_import_kwh"], shown["energy_export_kwh"]], rel=1e-5)


async def test_eight_units_share_one_line_and_an_absent_one_stays_silent(
    serial_link: SerialLink, master: AsyncModbusSerialClient
) -> None:
    async with still_sim(list(range(1, 9)), rtu=str(serial_link.a)) as sim:
        for unit in sim.units:
            assert await read_block(master, unit) == pytest.approx(model_block(sim, unit), rel=1e-6)
        with pytest.raises(ModbusIOException, match="No response"):
            await master.read_input_registers(0, count=2, device_id=9)  # nobody has address 9 on this bus
        refused = await master.read_input_registers(0x0024, count=2, device_id=4)
        assert refused.exception_code == ExceptionCode.ILLEGAL_DATA_ADDRESS


async def test_each_fault_shows_as_it_would_on_a_real_bus_and_spares_the_others(
    serial_link: SerialLink, master: AsyncModbusSerialClient
) -> None:
    faults = {
        2: Fault(kind=FaultKind.DEAD),
        3: Fault(kind=FaultKind.SLOW, seconds=0.3),
        4: Fault(kind=FaultKind.CRC),
        5: Fault(kind=FaultKind.EXCEPTION, code=4),
        6: Fault(kind=FaultKind.GARBAGE),
    }
    async with still_sim([1, 2, 3, 4, 5, 6], rtu=str(serial_link.a), faults=faults) as sim:
        loop = asyncio.get_running_loop()
        healthy = model_block(sim, 1)
        assert await read_block(master, 1) == pytest.approx(healthy, rel=1e-6)
        with pytest.raises(ModbusIOException, match="No response"):
            await master.read_input_registers(0, count=2, device_id=2)
        assert await read_block(master, 1) == pytest.approx(healthy, rel=1e-6)

        asked = loop.time()
        assert await read_block(master, 3) == pytest.approx(model_block(sim, 3), rel=1e-6)
        assert loop.time() - asked >= 0.25  # a lower bound: the answer was held back, never early

        refused = await master.read_input_registers(0, count=2, device_id=5)
        assert refused.exception_code == 4
        garbage = await read_block(master, 6)
        assert all(garbage[q] != pytest.approx(v, rel=1e-3) for q, v in model_block(sim, 6).items())
        with pytest.raises(ModbusIOException, match="No response"):  # pymodbus drops the bad frame
            await master.read_input_registers(0, count=2, device_id=4)
        assert await read_block(master, 1) == pytest.approx(healthy, rel=1e-6)
        master.close()

        with pytest.raises(MbpollError, match="Invalid CRC"):  # libmodbus names the fault
            await asyncio.to_thread(read_floats_rtu, str(serial_link.b), 4, 0x0000, 1)
        with pytest.raises(MbpollError, match="Slave device or server failure"):
            await asyncio.to_thread(read_floats_rtu, str(serial_link.b), 5, 0x0000, 1)


async def test_a_late_answer_reaches_the_wire_after_the_next_units_answer(serial_link: SerialLink) -> None:
    """The master gave up on slow unit 3 and asked unit 1; both answer, unit 1 first, as on RS-485."""
    async with still_sim([1, 3], rtu=str(serial_link.a), faults={3: Fault(kind=FaultKind.SLOW, seconds=0.3)}):
        frames = await asyncio.to_thread(exchange_raw, serial_link.b, [3, 1], reply_bytes=2 * 9)
    assert [frames[0], frames[9]] == [1, 3]
    for frame in (frames[:9], frames[9:]):
        assert FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def exchange_raw(device: Path, units: list[int], *, reply_bytes: int) -> bytes:
    """Send one two-register read per unit back to back, then read `reply_bytes` off the line."""
    framer = FramerRTU(DecodePDU(False))
    with serial.Serial(str(device), baudrate=9600, timeout=5) as line:
        for unit in units:
            line.write(framer.buildFrame(ReadInputRegistersRequest(address=0, count=2, dev_id=unit)))
        return bytes(line.read(reply_bytes))


async def test_rtu_over_tcp_serves_crc_framed_units_to_pymodbus_and_mbpoll(tmp_path: Path) -> None:
    async with still_sim([1, 2], port=0, rtu_over_tcp=True, faults={2: Fault(kind=FaultKind.CRC)}) as sim:
        assert sim.endpoint == f"rtu-over-tcp 127.0.0.1:{sim.port}"
        client = AsyncModbusTcpClient(
            "127.0.0.1", port=sim.port, framer=FramerType.RTU, timeout=0.5, retries=0
        )
        assert await client.connect()
        try:
            assert await read_block(client, 1) == pytest.approx(model_block(sim, 1), rel=1e-6)
            with pytest.raises(ModbusIOException, match="No response"):
                await client.read_input_registers(0, count=2, device_id=2)
        finally:
            client.close()
        with virtual_com_port(tmp_path, "127.0.0.1", sim.port) as com:  # as a converter's COM-port driver
            voltages = await asyncio.to_thread(read_floats_rtu, str(com), 1, 0x0000, 3)
            assert voltages == pytest.approx([sim.values(1)[q] for q in VOLTAGES], rel=1e-5)
            with pytest.raises(MbpollError, match="Invalid CRC"):
                await asyncio.to_thread(read_floats_rtu, str(com), 2, 0x0000, 1)


async def test_faults_on_modbus_tcp() -> None:
    faults = {
        2: Fault(kind=FaultKind.DEAD),
        3: Fault(kind=FaultKind.SLOW, seconds=0.3),
        4: Fault(kind=FaultKind.EXCEPTION, code=6),
        5: Fault(kind=FaultKind.GARBAGE),
    }
    async with still_sim([1, 2, 3, 4, 5], port=0, faults=faults) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
        assert await client.connect()
        try:
            with pytest.raises(ModbusIOException, match="No response"):
                await client.read_input_registers(0, count=2, device_id=2)
            assert await read_block(client, 3) == pytest.approx(model_block(sim, 3), rel=1e-6)
            assert (await client.read_input_registers(0, count=2, device_id=4)).exception_code == 6
            garbage = await read_block(client, 5)
            assert all(garbage[q] != pytest.approx(v, rel=1e-3) for q, v in model_block(sim, 5).items())
            assert await read_block(client, 1) == pytest.approx(model_block(sim, 1), rel=1e-6)
        finally:
            client.close()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"rtu": "/dev/null", "rtu_over_tcp": True}, "exclude each other"),
        ({"faults": {9: Fault(kind=FaultKind.DEAD)}}, r"not served: \[9\]"),
        ({"faults": {1: Fault(kind=FaultKind.CRC)}}, "needs RTU framing"),
        ({"rtu": "/dev/null", "parity": "X"}, "parity must be N, E or O"),
        ({"rtu": "/dev/null", "baud": 0}, "baud must be positive"),
    ],
)
def test_conflicting_options_are_refused_at_once(options: LineOptions, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SimServer(profile=SDM630, units=[1], **options)


async def test_a_missing_serial_port_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"
    with pytest.raises(SimServerError, match=f"rtu {missing} at 9600 8N1"):
        await SimServer(profile=SDM630, units=[1], rtu=str(missing)).start()


async def test_a_torn_frame_is_dropped_after_a_silence_and_the_line_recovers(
    serial_link: SerialLink, master: AsyncModbusSerialClient
) -> None:
    async with still_sim([1], rtu=str(serial_link.a)) as sim:
        request = FramerRTU(DecodePDU(False)).buildFrame(
            ReadInputRegistersRequest(address=0, count=2, dev_id=1)
        )
        with serial.Serial(str(serial_link.b), baudrate=9600) as line:
            line.write(request[:5])  # a master reset mid-frame: the meter waits for the rest...
        await asyncio.sleep(3 * FRAME_GAP_S)  # ...until the line has been silent long enough
        assert await read_block(master, 1) == pytest.approx(model_block(sim, 1), rel=1e-6)


async def test_a_noisy_line_spoils_only_its_share_of_the_answers() -> None:
    """A scenario's crc window loses CRC_FAILURE_SHARE of the polls, served live as generated."""
    noisy = Fault(kind=FaultKind.CRC, share=0.3)
    async with still_sim([1], port=0, rtu_over_tcp=True, faults={1: noisy}) as sim:
        client = AsyncModbusTcpClient(
            "127.0.0.1", port=sim.port, framer=FramerType.RTU, timeout=0.3, retries=0
        )
        assert await client.connect()
        spoiled = 0
        try:
            for _ in range(60):
                try:
                    await client.read_input_registers(0, count=2, device_id=1)
                except ModbusIOException:
                    spoiled += 1
                    client.close()  # pymodbus drops what it cannot frame; start clean
                    assert await client.connect()
        finally:
            client.close()
    assert 5 <= spoiled <= 35  # about 18 of 60; never all, never none
