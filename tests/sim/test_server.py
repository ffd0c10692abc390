"""The simulator over real TCP, judged by pymodbus' client and by mbpoll, a third-party Modbus master."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from pymodbus.client import AsyncModbusTcpClient

from kilowatch.profiles import Profile, Register, Table, load_builtin
from sim.register_image import ExceptionCode
from sim.server import SimServer, SimServerError
from tests.mbpoll import MbpollError, read_floats

SDM630 = load_builtin("eastron-sdm630")
MONDAY_AFTERNOON = datetime.fromisoformat("2025-03-03T14:00:00+07:00")

pytestmark = pytest.mark.services


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    """Three SDM630s whose registers hold still for an hour, so every reader sees the same window."""
    async with SimServer(
        profile=SDM630, units=[1, 2, 3], port=0, seed=11, update_interval=3600, start=MONDAY_AFTERNOON
    ) as server:
        yield server


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[AsyncModbusTcpClient]:
    modbus = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=5, retries=0)
    assert await modbus.connect()
    yield modbus
    modbus.close()


def request_runs(profile: Profile) -> list[list[Register]]:
    """Registers grouped into the fewest requests a master may send: contiguous and within the limit."""
    runs: list[list[Register]] = []
    for reg in sorted(profile.registers, key=lambda r: (r.table, r.address)):
        last = runs[-1] if runs else None
        if (
            last
            and last[-1].table is reg.table
            and last[-1].address + last[-1].count == reg.address
            and sum(r.count for r in last) + reg.count <= profile.quirks.max_registers_per_request
        ):
            last.append(reg)
        else:
            runs.append([reg])
    return runs


async def read_profile(modbus: AsyncModbusTcpClient, unit: int) -> dict[str, float | None]:
    decoded: dict[str, float | None] = {}
    for run in request_runs(SDM630):
        count = sum(r.count for r in run)
        read = modbus.read_input_registers if run[0].table is Table.INPUT else modbus.read_holding_registers
        response = await read(run[0].address, count=count, device_id=unit)
        assert not response.isError(), (unit, run[0].address, count, response)
        decoded |= SDM630.decode_words({run[0].address: list(response.registers)}, run[0].table)
    return decoded


async def test_registers_decode_to_the_meters_values_and_the_physics_holds(
    sim: SimServer, client: AsyncModbusTcpClient
) -> None:
    totals = {}
    for unit in sim.units:
        got = await read_profile(client, unit)
        assert set(got) == {r.quantity for r in SDM630.registers}
        shown = sim.values(unit)
        assert got == pytest.approx({q: shown[q] for q in got}, rel=1e-6)  # float32 on the wire
        v = {k: x for k, x in got.items() if x is not None}
        for ph in ("l1", "l2", "l3"):
            p, q, s = v[f"active_power_{ph}_w"], v[f"reactive_power_{ph}_var"], v[f"apparent_power_{ph}_va"]
            assert p == pytest.approx(
                v[f"voltage_{ph}_v"] * v[f"current_{ph}_a"] * v[f"power_factor_{ph}"], rel=1e-5
            )
            assert s**2 == pytest.approx(p**2 + q**2, rel=1e-5)
        assert v["active_power_w"] == pytest.approx(sum(v[f"active_power_{p}_w"] for p in ("l1", "l2", "l3")))
        assert v["voltage_l1_l2_v"] == pytest.approx(math.sqrt(3) * 220, rel=0.06)
        assert v["frequency_hz"] == pytest.approx(50, abs=0.1)
        assert v["energy_import_kwh"] > 1000
        totals[unit] = v["active_power_w"]
    assert totals[1] > 2 * max(totals[2], totals[3])  # the main meter and two sub-meters


async def test_refusals_carry_the_exception_codes_of_a_real_meter(client: AsyncModbusTcpClient) -> None:
    refusals = {
        "gap in the map": client.read_input_registers(0x0024, count=2, device_id=1),
        "read spanning into the gap": client.read_input_registers(0x0022, count=4, device_id=1),
        "wrong table": client.read_holding_registers(0x0000, count=2, device_id=1),
        "coils": client.read_coils(0, count=8, device_id=1),
        "over-long read": client.read_input_registers(0x0000, count=82, device_id=2),
        "write register": client.write_register(0x0000, 1, device_id=1),
        "write registers": client.write_registers(0x0000, [1, 2], device_id=1),
        "write coil": client.write_coil(0, True, device_id=1),
        "unknown unit": client.read_input_registers(0x0000, count=2, device_id=9),
    }
    codes = {name: (await request).exception_code for name, request in refusals.items()}
    assert codes == {
        "gap in the map": ExceptionCode.ILLEGAL_DATA_ADDRESS,
        "read spanning into the gap": ExceptionCode.ILLEGAL_DATA_ADDRESS,
        "wrong table": ExceptionCode.ILLEGAL_DATA_ADDRESS,
        "coils": ExceptionCode.ILLEGAL_DATA_ADDRESS,
        "over-long read": ExceptionCode.ILLEGAL_DATA_VALUE,
        "write register": ExceptionCode.ILLEGAL_FUNCTION,
        "write registers": ExceptionCode.ILLEGAL_FUNCTION,
        "write coil": ExceptionCode.ILLEGAL_FUNCTION,
        "unknown unit": ExceptionCode.GATEWAY_TARGET_FAILED_TO_RESPOND,
    }
    still_serving = await client.read_input_registers(0x0000, count=2, device_id=1)
    assert not still_serving.isError()


async def test_mbpoll_reads_the_same_values_as_the_profile_decoder(
    sim: SimServer, client: AsyncModbusTcpClient
) -> None:
    decoded = await read_profile(client, 2)
    voltages = await asyncio.to_thread(read_floats, "127.0.0.1", sim.port, 2, 0x0000, 3)
    energy = await asyncio.to_thread(read_floats, "127.0.0.1", sim.port, 2, 0x0048, 2)
    power = await asyncio.to_thread(read_floats, "127.0.0.1", sim.port, 2, 0x0034, 1)
    assert await read_profile(client, 2) == decoded  # still the same update window
    expected = [decoded[q] for q in ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")]
    assert voltages == pytest.approx(expected, rel=1e-5)  # mbpoll prints 6 significant digits
    assert energy == pytest.approx([decoded["energy_import_kwh"], decoded["energy_export_kwh"]], rel=1e-5)
    assert power == pytest.approx([decoded["active_power_w"]], rel=1e-5)


async def test_mbpoll_gets_illegal_data_address_for_an_unmapped_register(sim: SimServer) -> None:
    with pytest.raises(MbpollError, match="Illegal data address"):
        await asyncio.to_thread(read_floats, "127.0.0.1", sim.port, 1, 0x0024, 1)


async def test_counters_advance_while_serving_at_speed() -> None:
    async with SimServer(profile=SDM630, units=[4], port=0, speed=3600, start=MONDAY_AFTERNOON) as server:
        modbus = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=5, retries=0)
        await modbus.connect()
        try:
            counter = SDM630.register("energy_import_kwh")
            readings: list[float] = []
            for _ in range(200):  # an hour of simulated time per real second: a few polls suffice
                words = await modbus.read_input_registers(counter.address, count=counter.count, device_id=4)
                kwh = counter.decode(list(words.registers))
                assert kwh is not None
                readings.append(kwh)
                if readings[-1] > readings[0]:
                    break
                await asyncio.sleep(0.05)
        finally:
            modbus.close()
    assert readings[-1] > readings[0]
    assert readings == sorted(readings)


def test_bad_unit_lists_are_refused_at_once() -> None:
    for units, problem in (([], "at least one"), ([0], "1-247"), ([248], "1-247"), ([1, 1], "unique")):
        with pytest.raises(ValueError, match=problem):
            SimServer(profile=SDM630, units=units)


async def test_an_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = SimServer(profile=SDM630, units=[1], port=port)
        with pytest.raises(SimServerError, match=f"127.0.0.1:{port}"):
            await server.start()


async def test_a_function_code_pymodbus_cannot_decode_is_an_illegal_function(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(bytes([0x00, 0x07, 0x00, 0x00, 0x00, 0x02, 0x01, 0x41]))  # MBAP, unit 1, function 0x41
        answer = await asyncio.wait_for(reader.readexactly(9), 5)
    finally:
        writer.close()
    assert answer == bytes([0x00, 0x07, 0x00, 0x00, 0x00, 0x03, 0x01, 0xC1, ExceptionCode.ILLEGAL_FUNCTION])
