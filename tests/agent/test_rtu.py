"""Modbus RTU on a real pseudo-terminal and through a TCP serial server: every way an answer goes wrong
becomes its own error, and none of them closes the shared port."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest
import serial
from pymodbus.framer import FramerRTU

from agent.errors import (
    BusUnavailable,
    CrcError,
    MalformedResponse,
    ModbusExceptionResponse,
    ModbusTimeout,
    WrongUnit,
)
from agent.transport import (
    ModbusReader,
    RtuOverTcpLink,
    SerialPortLink,
    crc16,
    rtu_silence_error,
    serial_open_problem,
)
from kilowatch.profiles import Table
from tests.rtu_line import OTHER_UNIT, PtyLine, TcpSerialServer, answer, frame

LINE = {1: "ok", 2: "silent", 3: "crc", 4: "other", 5: "short", 6: "exception:2", 7: "slow:0.05"}


def test_crc16_agrees_with_pymodbus() -> None:
    for data in (b"\x01\x04\x00\x00\x00\x02", os.urandom(1), os.urandom(255)):
        assert crc16(data) == FramerRTU.compute_CRC(data)


def test_what_a_timed_out_request_heard_names_the_error() -> None:
    request = frame(bytes([3, 4, 0, 0, 0, 2]))
    assert isinstance(rtu_silence_error("b", 3, 0, b""), ModbusTimeout)
    crc = rtu_silence_error("b", 3, 0, answer(request, "crc")[0])
    assert isinstance(crc, CrcError)
    assert crc.retryable
    assert crc.unreachable
    assert "garbled answer (bad CRC or framing, 9 bytes: 03 04 04" in str(crc)
    other = rtu_silence_error("b", 3, 0, answer(request, "other")[0])
    assert isinstance(other, WrongUnit)
    assert (other.answered, other.unreachable) == (OTHER_UNIT, True)
    assert str(other) == "bus 'b' unit 3: unit 99 answered instead, reading register 0x0000"


def test_serial_open_problems_read_like_a_technician_would_say_them() -> None:
    missing = serial.SerialException(errno.ENOENT, "could not open port /dev/ttyUSB9: No such file")
    busy = serial.SerialException(errno.EAGAIN, "Could not exclusively lock port /dev/ttyUSB0")
    baud = serial.SerialException(errno.EINVAL, "Invalid baud rate: 12345")
    assert serial_open_problem(missing) == "no such serial port"
    assert serial_open_problem(busy) == "the port is busy (another program has it open)"
    assert serial_open_problem(baud) == "the port refused the settings ([Errno 22] Invalid baud rate: 12345)"
    assert serial_open_problem(ValueError("Not a valid baudrate: -1")).startswith("the port refused")


async def test_every_fault_on_one_pty_line_is_told_apart_and_the_port_stays_open() -> None:
    async with PtyLine(LINE) as line:
        link = SerialPortLink(device=line.path, baud=9600)
        async with ModbusReader(link, bus="rs485", timeout_s=0.3) as reader:
            assert await reader.read(Table.INPUT, 0x10, 3, 1) == [0x10, 0x11, 0x12]
            with pytest.raises(ModbusTimeout):
                await reader.read(Table.INPUT, 0, 2, 2)
            with pytest.raises(CrcError):
                await reader.read(Table.INPUT, 0, 2, 3)
            with pytest.raises(WrongUnit, match="unit 99 answered instead"):
                await reader.read(Table.INPUT, 0, 2, 4)
            with pytest.raises(MalformedResponse, match="asked for 2 registers, got 1"):
                await reader.read(Table.INPUT, 0, 2, 5)
            with pytest.raises(ModbusExceptionResponse) as exc:
                await reader.read(Table.HOLDING, 0, 2, 6)
            assert await reader.read(Table.HOLDING, 0x20, 2, 7) == [0x20, 0x21]  # slow but within time
            assert await reader.read(Table.INPUT, 0x30, 1, 1) == [0x30]
            assert reader.opens == 1
    assert (exc.value.code, exc.value.unreachable) == (2, False)
    assert line.responder.requests == [1, 2, 3, 4, 5, 6, 7, 1]


async def test_a_slow_units_late_answer_does_not_poison_the_next_request() -> None:
    async with PtyLine({1: "ok", 2: "slow:0.3"}) as line:
        link = SerialPortLink(device=line.path)
        async with ModbusReader(link, bus="rs485", unit_timeouts={1: 0.5, 2: 0.1}) as reader:
            with pytest.raises(ModbusTimeout):
                await reader.read(Table.INPUT, 0, 2, 2)
            for address in range(0, 40, 2):  # spread over 0.6 s: unit 2's late answer arrives meanwhile
                await asyncio.sleep(0.03)
                assert await reader.read(Table.INPUT, address, 2, 1) == [address, address + 1]
            assert reader.opens == 1


async def test_a_missing_or_busy_port_is_a_clear_bus_error() -> None:
    async with ModbusReader(SerialPortLink(device="/dev/ttyKW404"), bus="rs485") as reader:
        with pytest.raises(BusUnavailable) as missing:
            await reader.read(Table.INPUT, 0, 2, 1)
    assert str(missing.value) == "bus 'rs485' unavailable: /dev/ttyKW404: no such serial port"
    async with PtyLine({1: "ok"}) as line:
        holder = serial.Serial(line.path, exclusive=True)
        try:
            async with ModbusReader(SerialPortLink(device=line.path), bus="rs485") as reader:
                with pytest.raises(BusUnavailable, match="the port is busy"):
                    await reader.read(Table.INPUT, 0, 2, 1)
                holder.close()
                assert await reader.read(Table.INPUT, 0, 2, 1) == [0, 1]  # opened on the next read
        finally:
            holder.close()


async def test_rtu_over_tcp_reads_and_diagnoses_like_a_serial_port() -> None:
    async with (
        TcpSerialServer({1: "ok", 3: "crc"}) as server,
        ModbusReader(RtuOverTcpLink("127.0.0.1", server.port), bus="conv", timeout_s=0.3) as reader,
    ):
        assert await reader.read(Table.INPUT, 0x48, 2, 1) == [0x48, 0x49]
        with pytest.raises(CrcError):
            await reader.read(Table.INPUT, 0, 2, 3)
        with pytest.raises(ModbusTimeout):
            await reader.read(Table.INPUT, 0, 2, 9)
        assert await reader.read(Table.INPUT, 0, 2, 1) == [0, 1]
        assert reader.opens == 1
