"""What a profile-built meter answers, without sockets: encoded words and Modbus exception codes."""

from __future__ import annotations

from typing import Any

import pytest

from kilowatch.profiles import Profile, Table, load_builtin
from sim.register_image import ExceptionCode, RegisterImage

SDM630 = load_builtin("eastron-sdm630")
VALUES = {reg.quantity: 1000.0 + 7.25 * i for i, reg in enumerate(SDM630.registers)}


def make_profile(registers: list[dict[str, Any]], max_registers: int = 125) -> Profile:
    return Profile.model_validate(
        {
            "id": "test-meter",
            "manufacturer": "Test",
            "model": "T-1",
            "source": "written for this test",
            "quirks": {"max_registers_per_request": max_registers},
            "registers": registers,
        }
    )


def test_every_register_round_trips_through_the_profile_decoder() -> None:
    image = RegisterImage(SDM630)
    words = {}
    for reg in SDM630.registers:
        answer = image.read(4, reg.address, reg.count, VALUES)
        assert isinstance(answer, list), reg.quantity
        words[reg.address] = answer
    decoded = SDM630.decode_words(words)
    assert decoded == pytest.approx(VALUES, rel=1e-7)


def test_a_contiguous_block_reads_in_one_request() -> None:
    answer = RegisterImage(SDM630).read(4, 0x0000, 36, VALUES)  # L1..L3 voltage through power factor
    assert isinstance(answer, list)
    assert len(answer) == 36
    assert SDM630.decode_words({0: answer})["power_factor_l3"] == pytest.approx(VALUES["power_factor_l3"])


@pytest.mark.parametrize(
    ("function_code", "address", "count", "code"),
    [
        (4, 0x0024, 2, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # a gap in the map
        (4, 0x0022, 4, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # one defined value, then the gap
        (4, 0x0030, 6, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # the gap, then one defined value
        (4, 0x0001, 2, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # halves of two floats
        (4, 0x0000, 1, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # half a float
        (4, 0xFFFF, 1, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # the end of the address space
        (3, 0x0000, 2, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # the SDM630 has these in input registers only
        (1, 0x0000, 1, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # no coils
        (2, 0x0000, 1, ExceptionCode.ILLEGAL_DATA_ADDRESS),  # no discrete inputs
        (4, 0x0000, 81, ExceptionCode.ILLEGAL_DATA_VALUE),  # the SDM630 answers at most 80 registers
        (4, 0x0024, 82, ExceptionCode.ILLEGAL_DATA_VALUE),  # the count is checked before the address
        (4, 0x0000, 0, ExceptionCode.ILLEGAL_DATA_VALUE),
        (6, 0x0000, 1, ExceptionCode.ILLEGAL_FUNCTION),  # write single register: the meter is read-only
        (16, 0x0000, 2, ExceptionCode.ILLEGAL_FUNCTION),  # write multiple registers
        (5, 0x0000, 1, ExceptionCode.ILLEGAL_FUNCTION),  # write single coil
        (23, 0x0000, 2, ExceptionCode.ILLEGAL_FUNCTION),  # read/write multiple registers
    ],
)
def test_refusals_use_the_exception_code_a_real_meter_sends(
    function_code: int, address: int, count: int, code: ExceptionCode
) -> None:
    assert RegisterImage(SDM630).read(function_code, address, count, VALUES) is code


def test_the_profiles_request_limit_is_the_meters_limit() -> None:
    profile = make_profile(
        [{"quantity": f"voltage_{p}_v", "address": 2 * i} for i, p in enumerate(("l1", "l2", "l3"))],
        max_registers=4,
    )
    image = RegisterImage(profile)
    assert isinstance(image.read(4, 0, 4, VALUES), list)
    assert image.read(4, 0, 6, VALUES) is ExceptionCode.ILLEGAL_DATA_VALUE


def test_type_word_order_scale_and_offset_are_honoured() -> None:
    profile = make_profile(
        [
            {"quantity": "energy_import_kwh", "table": "holding", "address": 10, "type": "uint32",
             "word_order": "CDAB", "scale": 0.01},
            {"quantity": "power_factor", "table": "holding", "address": 12, "type": "int16", "scale": 0.001},
            {"quantity": "frequency_hz", "table": "holding", "address": 13, "type": "uint16", "scale": 0.01,
             "offset": 45.0},
            {"quantity": "active_power_w", "table": "holding", "address": 14, "type": "float64",
             "word_order": "DCBA"},
            {"quantity": "voltage_l1_v", "table": "input", "address": 10, "type": "float32",
             "word_order": "BADC"},
        ]
    )  # fmt: skip
    values = {
        "energy_import_kwh": 123456.78,
        "power_factor": -0.87,
        "frequency_hz": 50.02,
        "active_power_w": 3795.25,
        "voltage_l1_v": 229.8,
    }
    image = RegisterImage(profile)
    holding = image.read(3, 10, 8, values)
    inputs = image.read(4, 10, 2, values)
    assert isinstance(holding, list)
    assert isinstance(inputs, list)
    assert holding[:2] == [12345678 & 0xFFFF, 12345678 >> 16]  # CDAB: low word first
    assert holding[3] == 502  # (50.02 - 45) / 0.01
    decoded = profile.decode_words({10: holding}, Table.HOLDING) | profile.decode_words({10: inputs})
    assert decoded == pytest.approx(values, abs=1e-4)
    assert image.read(4, 12, 1, values) is ExceptionCode.ILLEGAL_DATA_ADDRESS  # holding, not input


def test_integers_that_do_not_fit_roll_over_or_saturate_like_meter_registers() -> None:
    profile = make_profile(
        [
            {"quantity": "energy_import_kwh", "address": 0, "type": "uint16"},
            {"quantity": "active_power_w", "address": 1, "type": "int16"},
        ]
    )
    counter, power = profile.registers
    assert counter.stored(70_000.4) == 70_000 - 65_536  # a counter rolls over
    assert power.stored(40_000) == 32_767  # an instantaneous value saturates
    assert power.stored(-40_000) == -32_768
