"""Polling one meter through the read interface: decoding, per-value errors, unreachable meters."""

from __future__ import annotations

from agent.errors import ModbusExceptionResponse, ModbusTimeout
from agent.poller import NOT_AVAILABLE, Poll, poll, to_reading
from agent.transport import MemoryReader
from kilowatch.mqtt_contract import ClockState, Quality, Reading
from kilowatch.profiles import Table, load_builtin
from tests.agent_support import full_map, register_map

SDM = load_builtin("eastron-sdm630")


async def test_every_value_decoded_and_good() -> None:
    values, words = full_map(SDM)
    reading = to_reading(await poll(MemoryReader({1: words}), SDM, 1), SDM, "m1", ClockState.SYNCED)
    assert reading.values == values
    assert (reading.quality, reading.value_quality) == (Quality.GOOD, {})
    assert (reading.meter, reading.profile, reading.clock) == ("m1", "eastron-sdm630", ClockState.SYNCED)
    assert Reading.model_validate_json(reading.model_dump_json()) == reading


async def test_a_failed_request_costs_only_its_values() -> None:
    values, words = full_map(SDM)
    del words[(Table.INPUT, 0x0049)]  # one word of energy_import_kwh: its whole request gets exception 2
    reader = MemoryReader({1: words})
    result = await poll(reader, SDM, 1)
    reading = to_reading(result, SDM, "m1", ClockState.SYNCED)
    lost = {"frequency_hz", "energy_import_kwh", "energy_export_kwh",
            "reactive_energy_import_kvarh", "reactive_energy_export_kvarh"}  # fmt: skip
    assert reading.quality is Quality.ERROR
    assert reading.value_quality == dict.fromkeys(lost, Quality.ERROR)
    assert reading.values == {k: v for k, v in values.items() if k not in lost}
    assert [str(f) for f in result.failures] == [
        "bus 'memory' unit 1: exception 2 (illegal data address) reading register 0x0046"
    ]
    assert len(reader.requests) == 7  # the other requests still went out


async def test_nan_and_sentinels_are_errors_not_numbers() -> None:
    values, words = full_map(SDM)
    words[(Table.INPUT, 0x00C8)], words[(Table.INPUT, 0x00C9)] = 0x7FC0, 0x0000  # float32 NaN
    result = await poll(MemoryReader({1: words}), SDM, 1)
    assert result.errors == {"voltage_l1_l2_v": NOT_AVAILABLE}
    assert "voltage_l1_l2_v" not in result.values
    assert result.values["voltage_l2_l3_v"] == values["voltage_l2_l3_v"]
    assert result.failures == []


async def test_an_absent_meter_is_asked_once_per_poll() -> None:
    _, words = full_map(SDM)
    reader = MemoryReader({1: words})
    result = await poll(reader, SDM, 9)
    reading = to_reading(result, SDM, "m9", ClockState.UNSYNCED)
    assert (reading.values, reading.quality) == ({}, Quality.ERROR)
    assert reading.value_quality == {}  # not read at all: said once for the reading, not per quantity
    assert set(result.errors) == {reg.quantity for reg in SDM.registers}
    assert len(reader.requests) == len(result.failures) == 1


def test_an_unread_poll_errs_every_quantity() -> None:
    result = Poll.unread(SDM, "bus down")
    assert (result.values, result.failures) == ({}, [])
    assert result.errors == dict.fromkeys((reg.quantity for reg in SDM.registers), "bus down")


class GatewayWithoutMeter(MemoryReader):
    """A TCP-to-RS-485 gateway: exception 11 when the meter behind it does not answer."""

    async def read(
        self, table: Table, address: int, count: int, unit: int, *, timeout_s: float | None = None
    ) -> list[int]:
        self.requests.append((table, address, count, unit))
        raise ModbusExceptionResponse(self.bus, unit, address, 11)


async def test_gateway_target_failure_counts_as_unreachable() -> None:
    reader = GatewayWithoutMeter({})
    result = await poll(reader, SDM, 3)
    assert (len(reader.requests), result.values) == (1, {})
    assert all("exception 11 (gateway target device failed to respond)" in e for e in result.errors.values())


def test_errors_carry_their_data() -> None:
    exc = ModbusTimeout("bus-a", 4, 0x48)
    assert (exc.bus, exc.unit, exc.address, exc.unreachable) == ("bus-a", 4, 0x48, True)
    assert str(exc) == "bus 'bus-a' unit 4: no answer reading register 0x0048"
    assert not ModbusExceptionResponse("b", 1, 0, 2).unreachable


async def test_impossible_values_are_bad_with_their_reason_never_good() -> None:
    values, _ = full_map(SDM)
    words = register_map(SDM, values | {"voltage_l1_v": 3.4e18, "power_factor": -7.0})
    result = await poll(MemoryReader({1: words}), SDM, 1)
    assert result.bad == {
        "voltage_l1_v": "3.4e+18 V is outside the physical range 0..1e+06 V",
        "power_factor": "-7 1 is outside the physical range -1..1 1",
    }
    reading = to_reading(result, SDM, "m1", ClockState.SYNCED)
    assert reading.quality is Quality.BAD
    assert reading.value_quality == dict.fromkeys(result.bad, Quality.BAD)
    assert reading.value_reasons == result.bad
    assert reading.values == {k: v for k, v in values.items() if k not in result.bad}
    assert Reading.model_validate_json(reading.model_dump_json()) == reading
