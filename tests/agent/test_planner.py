"""Read planning: contiguous registers merged, gaps bridged only when cheaper and allowed, within quirks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agent.bus_time import RtuTiming, SerialLine
from agent.planner import Request, plan, plan_time_s
from kilowatch.profiles import Profile, Table, load_builtin

LINE_9600 = SerialLine(baud=9600)


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
    return [(r.table.value, r.address, r.count, [reg.label for reg in r.registers]) for r in requests]


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
    planned = [reg.label for r in requests for reg in r.registers]
    assert sorted(planned) == sorted(reg.quantity for reg in sdm.registers)
    assert all(r.count <= sdm.quirks.max_registers_per_request for r in requests)
    assert all(r.table is Table.INPUT for r in requests)
    assert (requests[0].address, requests[0].count) == (0x0000, 0x24)  # the whole per-phase block at once


def two_floats(gap: int, **quirks: Any) -> Profile:
    """Two float32 registers with `gap` unmapped registers between them."""
    return profile(
        [{"quantity": "voltage_l1_v", "address": 0}, {"quantity": "voltage_l2_v", "address": 2 + gap}],
        **quirks,
    )


# At 9600 8N1 a read costs (20 + 2n) characters of 1/960 s plus the turnaround: one request bridging
# a gap of g registers beats two when 2g characters < 20 characters + turnaround, i.e. g < 10 + 4.8 at 10 ms.
@pytest.mark.parametrize(("gap", "requests"), [(1, 1), (14, 1), (15, 2), (40, 2)])
def test_a_gap_is_bridged_only_when_one_request_is_cheaper(gap: int, requests: int) -> None:
    timing = RtuTiming(line=LINE_9600, turnaround_s=0.010)
    got = plan(two_floats(gap, fill_gaps=True), timing=timing)
    assert len(got) == requests
    if requests == 1:
        assert (got[0].address, got[0].count) == (0, 4 + gap)
        assert [r.label for r in got[0].registers] == ["voltage_l1_v", "voltage_l2_v"]
    bridged, split = timing.read_s(4 + gap), 2 * timing.read_s(2)
    assert plan_time_s(got, timing) == pytest.approx(min(bridged, split))


def test_with_no_turnaround_the_break_even_gap_is_ten_and_a_tie_takes_fewer_requests() -> None:
    timing = RtuTiming(line=LINE_9600, turnaround_s=0.0)
    assert len(plan(two_floats(9, fill_gaps=True), timing=timing)) == 1
    assert len(plan(two_floats(10, fill_gaps=True), timing=timing)) == 1  # equal bus time
    assert len(plan(two_floats(11, fill_gaps=True), timing=timing)) == 2


def test_a_faster_line_bridges_longer_gaps() -> None:
    p = two_floats(30, fill_gaps=True)
    assert len(plan(p, timing=RtuTiming(line=LINE_9600))) == 2
    assert len(plan(p, timing=RtuTiming(line=SerialLine(baud=115200)))) == 1


def test_a_pause_before_each_request_favours_fewer_requests() -> None:
    p = two_floats(20, fill_gaps=True)
    assert len(plan(p, timing=RtuTiming(line=LINE_9600))) == 2
    assert len(plan(p, timing=RtuTiming(line=LINE_9600, pause_s=0.05))) == 1


def test_gaps_are_never_bridged_unless_the_profile_allows_it() -> None:
    assert [(r.address, r.count) for r in plan(two_floats(1))] == [(0, 2), (3, 2)]


def test_default_timing_is_the_profile_connection() -> None:
    p = two_floats(20, fill_gaps=True)
    fast = p.model_copy(update={"connection": p.connection.model_copy(update={"baud": 115200})})
    assert len(plan(p)) == 2
    assert len(plan(fast)) == 1


def test_forbidden_ranges_are_never_read() -> None:
    forbidden = [{"table": "input", "start": 3, "end": 3}]
    got = plan(two_floats(2, fill_gaps=True, forbidden_ranges=forbidden))
    assert [(r.address, r.count) for r in got] == [(0, 2), (4, 2)]
    # The same range in the other table does not matter.
    other = [{"table": "holding", "start": 3, "end": 3}]
    assert [(r.address, r.count) for r in plan(two_floats(2, fill_gaps=True, forbidden_ranges=other))] == [
        (0, 6)
    ]


def test_fill_gaps_respects_the_largest_request() -> None:
    got = plan(two_floats(4, fill_gaps=True, max_registers_per_request=7))
    assert [(r.address, r.count) for r in got] == [(0, 2), (6, 2)]
    got = plan(two_floats(3, fill_gaps=True, max_registers_per_request=7))
    assert [(r.address, r.count) for r in got] == [(0, 7)]


def test_single_register_reads_win_over_fill_gaps() -> None:
    got = plan(two_floats(1, fill_gaps=True, single_register_reads=True))
    assert [(r.address, r.count) for r in got] == [(0, 2), (3, 2)]


def test_a_register_inside_a_forbidden_range_is_a_profile_error() -> None:
    with pytest.raises(
        ValidationError, match=r"'voltage_l2_v' lies in the forbidden input range 0x0004-0x0005"
    ):
        two_floats(3, forbidden_ranges=[{"start": 4, "end": 5}])


def test_a_forbidden_range_must_not_end_before_it_starts() -> None:
    with pytest.raises(ValidationError, match="end 0x0001 is before start 0x0002"):
        two_floats(0, forbidden_ranges=[{"start": 2, "end": 1}])
