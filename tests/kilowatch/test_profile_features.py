"""What real meter maps need from the profile schema, one feature per test: integer types and word orders,
fixed scales and scale-factor registers, holding and input tables, CT/VT ratios, single-phase maps,
"not available" sentinels, and fingerprints that tell similar maps apart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.planner import plan
from agent.poller import poll
from agent.scan import identify
from agent.transport import MemoryReader, ModbusReader, TcpLink
from kilowatch import yamlconfig
from kilowatch.profiles import Profile, Ratios, Table, load_file, vector_failures
from kilowatch.registers import DataType, WordOrder, encode
from sim.register_image import ExceptionCode, RegisterImage
from sim.server import SimServer

BASE: dict[str, Any] = {
    "id": "test-meter",
    "manufacturer": "Test",
    "model": "T1",
    "source": "a test written for this schema feature",
}


def profile(**fields: Any) -> Profile:
    return Profile.model_validate(BASE | fields)


def problems(tmp_path: Path, **fields: Any) -> str:
    """What `kilowatch profiles check` says about a profile with `fields` (file:line key: message)."""
    path = tmp_path / "test-meter.yaml"
    path.write_text(yaml.safe_dump(BASE | fields, sort_keys=False))
    with pytest.raises(yamlconfig.ConfigError) as err:
        load_file(path)
    return "\n".join(err.value.problems)


INTEGERS = [DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64, DataType.UINT64]


@pytest.mark.parametrize("order", list(WordOrder))
@pytest.mark.parametrize("data_type", [*INTEGERS, DataType.FLOAT32, DataType.FLOAT64])
def test_every_type_and_word_order_round_trips_through_the_simulator(
    data_type: DataType, order: WordOrder
) -> None:
    p = profile(
        registers=[
            {
                "quantity": "energy_import_kwh",
                "address": 0,
                "type": data_type,
                "word_order": order,
                "scale": 0.01,
            }
        ]
    )
    words = RegisterImage(p).read(4, 0, p.registers[0].count, {"energy_import_kwh": 123.45})
    assert isinstance(words, list)
    assert p.encode({"energy_import_kwh": 123.45}) == {(Table.INPUT, i): w for i, w in enumerate(words)}
    assert p.decode_words({0: words})["energy_import_kwh"] == pytest.approx(123.45, rel=1e-6)


def test_a_wh_counter_maps_onto_kwh_with_a_fixed_scale() -> None:
    p = profile(registers=[{"quantity": "energy_import_kwh", "address": 0, "type": "uint32", "scale": 0.001}])
    assert p.decode_words({0: [0x0001, 0xE240]}) == {"energy_import_kwh": 123.456}  # 123456 Wh


def test_a_scale_factor_register_gives_the_power_of_ten() -> None:
    p = profile(
        parameters=[{"name": "w_sf", "address": 10, "type": "int16", "value": -1}],
        registers=[{"quantity": "active_power_w", "address": 0, "type": "int16", "scale_factor": "w_sf"}],
    )
    assert p.decode_words({0: [12345], 10: encode(-1, DataType.INT16)})["active_power_w"] == pytest.approx(
        1234.5
    )
    assert p.decode_words({0: [12345], 10: [2]})["active_power_w"] == pytest.approx(1_234_500)
    assert p.decode_words({0: [12345]}) == {}  # the value alone cannot be scaled
    image = RegisterImage(p)
    assert image.read(4, 10, 1, {"active_power_w": 0}) == encode(-1, DataType.INT16)
    assert p.decode(p.encode({"active_power_w": 2000.3}))["active_power_w"] == pytest.approx(2000.3)


def test_a_scale_factor_must_name_a_parameter(tmp_path: Path) -> None:
    said = problems(
        tmp_path, registers=[{"quantity": "active_power_w", "address": 0, "scale_factor": "nope"}]
    )
    assert "test-meter.yaml:" in said
    assert "unknown scale_factor 'nope'" in said


def test_holding_and_input_registers_are_read_with_their_own_function_code() -> None:
    p = profile(
        registers=[
            {"quantity": "voltage_l1_v", "address": 0, "table": "holding"},
            {"quantity": "current_l1_a", "address": 0, "table": "input"},
        ],
    )
    image = RegisterImage(p)
    values = {"voltage_l1_v": 230.0, "current_l1_a": 5.0}
    holding, read_input = image.read(3, 0, 2, values), image.read(4, 0, 2, values)
    assert isinstance(holding, list)
    assert isinstance(read_input, list)
    assert p.decode_words({0: holding}, Table.HOLDING) == {"voltage_l1_v": 230.0}
    assert p.decode_words({0: read_input}, Table.INPUT) == {"current_l1_a": 5.0}


def test_a_vector_names_its_table_when_the_profile_uses_both(tmp_path: Path) -> None:
    said = problems(
        tmp_path,
        registers=[
            {"quantity": "voltage_l1_v", "address": 0, "table": "holding"},
            {"quantity": "current_l1_a", "address": 0},
        ],
        test_vectors=[{"words": {0: [0, 0]}, "expect": {"voltage_l1_v": 0}}],
    )
    assert "test_vectors[0]: needs a table" in said


def test_a_holding_only_profile_needs_no_table_in_its_vectors() -> None:
    p = profile(
        registers=[
            {"quantity": "voltage_l1_v", "address": 0, "table": "holding", "type": "uint16", "scale": 0.1}
        ],
        test_vectors=[{"words": {0: [2301]}, "expect": {"voltage_l1_v": 230.1}}],
    )
    assert vector_failures(p) == []


CT_VT = {
    "registers": [
        {"quantity": "current_l1_a", "address": 0, "ct_scaled": True},
        {"quantity": "voltage_l1_v", "address": 2, "vt_scaled": True},
        {"quantity": "active_power_w", "address": 4, "ct_scaled": True, "vt_scaled": True},
        {"quantity": "frequency_hz", "address": 6},
    ]
}


def test_secondary_values_are_turned_into_primary_ones_with_the_configured_ratios() -> None:
    p = profile(**CT_VT)
    words = {
        0: encode(2.5, DataType.FLOAT32)
        + encode(100.0, DataType.FLOAT32)
        + encode(250.0, DataType.FLOAT32)
        + encode(50.0, DataType.FLOAT32)
    }
    got = p.decode_words(words, ratios=Ratios(ct=40, vt=200))
    assert got == {
        "current_l1_a": 100.0,
        "voltage_l1_v": 20_000.0,
        "active_power_w": 2_000_000.0,
        "frequency_hz": 50.0,
    }
    image = RegisterImage(p, Ratios(ct=40, vt=200))
    assert image.read(4, 0, 2, {"current_l1_a": 100.0}) == encode(2.5, DataType.FLOAT32)


async def test_the_poller_applies_the_meter_ratio_registers() -> None:
    p = profile(
        parameters=[
            {"name": "ct_ratio", "table": "holding", "address": 100, "type": "uint16", "value": 20},
            {
                "name": "vt_ratio",
                "table": "holding",
                "address": 101,
                "type": "uint16",
                "scale": 0.1,
                "value": 1,
            },
        ],
        ratio_registers={"ct": "ct_ratio", "vt": "vt_ratio"},
        **CT_VT,
    )
    values = {"current_l1_a": 60.0, "voltage_l1_v": 230.0, "active_power_w": 13_800.0, "frequency_hz": 50.0}
    image = RegisterImage(p, Ratios(ct=99, vt=99))  # the meter's own ratios win over any config
    assert image.read(4, 0, 2, values) == encode(3.0, DataType.FLOAT32)
    result = await poll(
        MemoryReader({1: p.encode(values, Ratios(ct=99, vt=99))}), p, 1, ratios=Ratios(ct=99, vt=99)
    )
    assert result.values == pytest.approx(values)
    assert result.errors == {}


async def test_a_missing_scale_factor_says_why_its_registers_have_no_value() -> None:
    p = profile(
        parameters=[{"name": "w_sf", "address": 10, "type": "int16"}],
        registers=[{"quantity": "active_power_w", "address": 0, "type": "int16", "scale_factor": "w_sf"}],
    )
    words = p.encode({"active_power_w": 5})
    del words[(Table.INPUT, 10)]
    result = await poll(MemoryReader({1: words}), p, 1)
    assert "illegal data address" in result.errors["active_power_w"]
    assert "parameter" in result.errors["active_power_w"]


def test_a_single_phase_meter_maps_no_other_phase(tmp_path: Path) -> None:
    assert profile(phases=1, registers=[{"quantity": "voltage_l1_v", "address": 0}]).phases == 1
    said = problems(tmp_path, phases=1, registers=[{"quantity": "voltage_l2_v", "address": 0}])
    assert "single-phase meter (phases: 1) has no 'voltage_l2_v'" in said


@pytest.mark.parametrize(
    ("data_type", "sentinel", "word"),
    [
        (DataType.UINT16, 0xFFFF, [0xFFFF]),
        (DataType.INT16, 0x8000, [0x8000]),
        (DataType.INT16, -32768, [0x8000]),
        (DataType.INT32, 0x80000000, [0x8000, 0x0000]),
        (DataType.UINT32, 0xFFFFFFFF, [0xFFFF, 0xFFFF]),
        (DataType.INT64, 0x8000000000000000, [0x8000, 0, 0, 0]),
    ],
)
def test_sentinels_mean_not_available(data_type: DataType, sentinel: int, word: list[int]) -> None:
    p = profile(
        registers=[
            {"quantity": "active_power_w", "address": 0, "type": data_type, "nan_sentinels": [sentinel]}
        ]
    )
    assert p.decode_words({0: word}) == {"active_power_w": None}
    assert p.decode_words({0: [0] * len(word)}) == {"active_power_w": 0.0}


def test_nan_is_never_a_number() -> None:
    p = profile(registers=[{"quantity": "active_power_w", "address": 0}])
    assert p.decode_words({0: [0x7FC0, 0]}) == {"active_power_w": None}
    assert math.isnan(float("nan"))


def test_a_sentinel_the_type_cannot_hold_is_refused(tmp_path: Path) -> None:
    said = problems(
        tmp_path,
        registers=[
            {"quantity": "active_power_w", "address": 0, "type": "int16", "nan_sentinels": [0x80000000]}
        ],
    )
    assert "can never be read from a int16" in said


SIBLING = {
    "parameters": [
        {"name": "model_code", "table": "holding", "address": 0x100, "type": "uint16", "value": 71}
    ],
    "registers": [{"quantity": "frequency_hz", "address": 0}, {"quantity": "voltage_l1_v", "address": 2}],
}


async def test_a_model_code_tells_meters_with_the_same_map_apart() -> None:
    a = Profile.model_validate(
        BASE | SIBLING | {"id": "meter-a", "fingerprint": [{"parameter": "model_code", "equals": 71}]}
    )
    b_fields = SIBLING | {"parameters": [SIBLING["parameters"][0] | {"value": 72}]}
    b = Profile.model_validate(  # a model with two variants, either of which is a "b"
        BASE | b_fields | {"id": "meter-b", "fingerprint": [{"parameter": "model_code", "equals": [72, 73]}]}
    )
    values = {"frequency_hz": 50.0, "voltage_l1_v": 230.0}
    for served in (a, b):
        reader = MemoryReader({1: served.encode(values)})
        assert await identify(reader, 1, [a, b]) == served.id


async def test_a_refused_address_tells_a_smaller_sibling_apart() -> None:
    big = profile(
        id="meter-big",
        registers=[*SIBLING["registers"], {"quantity": "current_l1_a", "address": 4}],
        fingerprint=[{"quantity": "frequency_hz", "min": 45, "max": 66}],
    )
    small = profile(
        id="meter-small",
        registers=SIBLING["registers"],
        fingerprint=[
            {"quantity": "frequency_hz", "min": 45, "max": 66},
            {"refuses": {"address": 4, "count": 2}},
        ],
    )
    values = {"frequency_hz": 50.0, "voltage_l1_v": 230.0, "current_l1_a": 1.0}
    assert await identify(MemoryReader({1: big.encode(values)}), 1, [small, big]) == "meter-big"
    assert await identify(MemoryReader({1: small.encode(values)}), 1, [small, big]) == "meter-small"
    assert RegisterImage(small).read(4, 4, 2, values) is ExceptionCode.ILLEGAL_DATA_ADDRESS


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ({"parameter": "model_code"}, "give equals, or both min and max"),
        ({"parameter": "model_code", "equals": 1, "min": 0}, "give either equals or min and max"),
        ({"quantity": "frequency_hz", "parameter": "model_code", "equals": 1}, "exactly one of"),
        ({"parameter": "serial", "equals": 1}, "parameter 'serial', which is not defined"),
        ({"refuses": {"address": 2}}, "but the profile maps 'voltage_l1_v' there"),
        ({"refuses": {"address": 9}, "equals": 3}, "a refuses check has no value to compare"),
    ],
)
def test_broken_fingerprint_checks_are_explained(
    tmp_path: Path, check: dict[str, Any], expected: str
) -> None:
    said = problems(tmp_path, **SIBLING, fingerprint=[check])
    assert expected in said
    assert "test-meter.yaml:" in said


async def test_the_simulator_serves_scale_factors_ratios_and_model_codes_over_tcp() -> None:
    """End to end: what these features look like on a socket, read by the agent's planner and scan."""
    p = profile(
        id="acme-sunspec",
        parameters=[
            {"name": "model_code", "table": "holding", "address": 0, "type": "uint16", "value": 201},
            {"name": "w_sf", "table": "holding", "address": 1, "type": "int16", "value": -1},
            {"name": "ct_ratio", "table": "holding", "address": 2, "type": "uint16", "value": 40},
        ],
        ratio_registers={"ct": "ct_ratio"},
        registers=[
            {"quantity": "active_power_w", "table": "holding", "address": 3, "type": "int32",
             "word_order": "CDAB", "scale_factor": "w_sf", "ct_scaled": True},
            {"quantity": "current_l1_a", "table": "holding", "address": 5, "type": "uint16", "scale": 0.01,
             "ct_scaled": True, "nan_sentinels": [0xFFFF]},
            {"quantity": "frequency_hz", "address": 0, "type": "float64", "word_order": "DCBA"},
        ],
        fingerprint=[{"parameter": "model_code", "equals": 201}, {"refuses": {"table": "holding", "address": 9}}],
    )  # fmt: skip
    async with SimServer(profile=p, units=[1], port=0, speed=0.001) as sim:  # one window throughout
        shown = sim.values(1)
        async with ModbusReader(TcpLink("127.0.0.1", sim.port), bus="sim", timeout_s=5) as reader:
            result = await poll(reader, p, 1, plan(p))
            assert await identify(reader, 1, [p]) == p.id
    assert result.errors == {}
    assert result.values["active_power_w"] == pytest.approx(shown["active_power_w"], abs=40 * 0.1 / 2 + 1e-6)
    assert result.values["current_l1_a"] == pytest.approx(shown["current_l1_a"], abs=40 * 0.01 / 2 + 1e-6)
    assert result.values["frequency_hz"] == pytest.approx(shown["frequency_hz"])
