"""Read planning: contiguous registers merged, bounded by the meter's quirks, never across a gap."""

from __future__ import annotations

from typing import Any

from agent.planner import Request, plan
from kilowatch.profiles import Profile, Table, load_builtin


def profile(registers: list[dict[str, Any]], **quirks: Any) -> Profile:
    return Profile.model_validate(
        {
            "id": "test-meter",
            "manufacturer": "Test",
            "model": "T1",
            "source": "written for the planner tests",
            "quirks": quirks,
            "registers": registers,
        }
    )


def spans(requests: list[Request]) -> list[tuple[str, int, int, list[str]]]:
    return [(r.table.value, r.address, r.count, [reg.quantity for reg in r.registers]) for r in requests]


def test_contiguous_registers_share_a_request_and_gaps_split() -> None:
    p = profile(
        [
            {"quantity": "voltage_l2_v", "address": 2},
            {"quantity": "voltage_l1_v", "address": 0},
            {"quantity": "frequency_hz", "address": 10, "type": "uint16"},
            {"quantity": "current_l1_a", "address": 11, "type": "int16"},
        ]
    )
    assert spans(plan(p)) == [
        ("input", 0, 4, ["voltage_l1_v", "voltage_l2_v"]),
        ("input", 10, 2, ["frequency_hz", "current_l1_a"]),
    ]


def test_tables_are_planned_apart() -> None:
    p = profile(
        [
            {"quantity": "voltage_l1_v", "address": 0},
            {"quantity": "energy_import_kwh", "address": 2, "table": "holding", "type": "uint32"},
            {"quantity": "voltage_l2_v", "address": 2},
        ]
    )
    assert spans(plan(p)) == [
        ("holding", 2, 2, ["energy_import_kwh"]),
        ("input", 0, 4, ["voltage_l1_v", "voltage_l2_v"]),
    ]


def test_max_registers_per_request_bounds_a_run() -> None:
    names = ["voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a"]
    p = profile([{"quantity": n, "address": 2 * i} for i, n in enumerate(names)], max_registers_per_request=5)
    assert [(r.address, r.count) for r in plan(p)] == [(0, 4), (4, 4), (8, 2)]
    assert all(r.count <= 5 for r in plan(p))


def test_single_register_reads_ask_for_one_value_each() -> None:
    p = profile(
        [{"quantity": "voltage_l1_v", "address": 0}, {"quantity": "voltage_l2_v", "address": 2}],
        single_register_reads=True,
    )
    assert spans(plan(p)) == [("input", 0, 2, ["voltage_l1_v"]), ("input", 2, 2, ["voltage_l2_v"])]


def test_sdm630_plan_covers_every_register_once_within_its_limit() -> None:
    sdm = load_builtin("eastron-sdm630")
    requests = plan(sdm)
    planned = [reg.quantity for r in requests for reg in r.registers]
    assert sorted(planned) == sorted(reg.quantity for reg in sdm.registers)
    assert all(r.count <= sdm.quirks.max_registers_per_request for r in requests)
    assert all(r.table is Table.INPUT for r in requests)
    assert (requests[0].address, requests[0].count) == (0x0000, 0x24)  # the whole per-phase block at once
