"""The Modbus TCP reader over real sockets: answers, exception codes, silence, and reconnection.

RTU on serial ports is in test_agent_rtu.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.errors import BusUnavailable, ModbusExceptionResponse, ModbusTimeout
from agent.transport import ModbusReader, TcpLink
from app.processes import free_port
from kilowatch.profiles import Table, load_builtin
from sim.server import SimServer

SDM = load_builtin("eastron-sdm630")


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never says a word."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_reads_registers_and_translates_exception_codes() -> None:
    async with (
        SimServer(profile=SDM, units=[1], port=0) as sim,
        ModbusReader(TcpLink("127.0.0.1", sim.port), bus="panel", timeout_s=2) as reader,
    ):
        words = await reader.read(Table.INPUT, 0x0048, 2, 1)
        expected = sim.values(1)["energy_import_kwh"]
        assert SDM.register("energy_import_kwh").decode(words) == pytest.approx(expected, rel=1e-3)
        with pytest.raises(ModbusExceptionResponse) as gap:
            await reader.read(Table.INPUT, 0x0024, 2, 1)  # between the per-phase block and the totals
        with pytest.raises(ModbusExceptionResponse) as absent:
            await reader.read(Table.INPUT, 0x0000, 2, 5)
        assert len(await reader.read(Table.INPUT, 0x0000, 0x24, 1)) == 0x24  # the connection survived
    assert (gap.value.code, gap.value.unreachable) == (2, False)
    assert (absent.value.bus, absent.value.unit, absent.value.code, absent.value.unreachable) == (
        "panel",
        5,
        11,
        True,
    )


async def test_silence_is_a_per_unit_timeout_that_keeps_the_connection(silent_port: int) -> None:
    link = TcpLink("127.0.0.1", silent_port)
    async with ModbusReader(link, bus="panel", timeout_s=5, unit_timeouts={4: 0.2}) as reader:
        with pytest.raises(ModbusTimeout) as info:
            await reader.read(Table.HOLDING, 0x0010, 2, 4)
        with pytest.raises(ModbusTimeout):
            await reader.read(Table.HOLDING, 0x0010, 2, 4)
        assert reader.opens == 1  # a silent unit never closes the connection
    assert (info.value.bus, info.value.unit, info.value.address) == ("panel", 4, 0x0010)
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_reconnects_on_the_next_read_after_the_server_comes_back() -> None:
    port = free_port()
    async with ModbusReader(TcpLink("127.0.0.1", port), bus="panel", timeout_s=0.3) as reader:
        with pytest.raises(BusUnavailable, match=f"cannot connect to 127.0.0.1:{port}"):
            await reader.read(Table.INPUT, 0, 2, 1)
        async with SimServer(profile=SDM, units=[1], port=port):
            assert len(await reader.read(Table.INPUT, 0, 2, 1)) == 2
        # The server went away under the connection: refused if the reader saw the close, else no answer.
        with pytest.raises((BusUnavailable, ModbusTimeout)):
            await reader.read(Table.INPUT, 0, 2, 1)
        async with SimServer(profile=SDM, units=[1], port=port):
            assert len(await reader.read(Table.INPUT, 0, 2, 1)) == 2
