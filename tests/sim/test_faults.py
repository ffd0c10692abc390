"""Parsing and validating fault specifications (pure)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from sim.faults import Fault, FaultKind, parse_fault


@pytest.mark.parametrize(
    ("text", "unit", "fault"),
    [
        ("3:dead", 3, Fault(kind=FaultKind.DEAD)),
        ("4:slow=0.8", 4, Fault(kind=FaultKind.SLOW, seconds=0.8)),
        ("247:crc", 247, Fault(kind=FaultKind.CRC)),
        ("5:exception=4", 5, Fault(kind=FaultKind.EXCEPTION, code=4)),
        ("6:garbage", 6, Fault(kind=FaultKind.GARBAGE)),
    ],
)
def test_fault_specifications_parse(text: str, unit: int, fault: Fault) -> None:
    assert parse_fault(text) == (unit, fault)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("dead", "is not UNIT:KIND[=ARG]"),
        ("x:dead", "is not UNIT:KIND[=ARG]"),
        ("0:dead", "unit id 1-247"),
        ("248:dead", "unit id 1-247"),
        ("3:boom", "unknown fault 'boom'; the faults are dead, slow, crc, exception, garbage"),
        ("3:dead=1", "fault 'dead' takes no argument"),
        ("3:slow", "fault 'slow' needs seconds"),
        ("3:slow=", "fault 'slow' needs seconds"),
        ("3:slow=soon", "seconds: Input should be a valid number"),
        ("3:slow=0", "seconds: Input should be greater than 0"),
        ("3:exception=9", "exception code 9 is not one of [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]"),
        ("3:exception=x", "code: Input should be a valid integer"),
    ],
)
def test_bad_fault_specifications_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        parse_fault(text)
    assert str(caught.value).startswith(repr(text))  # the user sees which of several --fault it was


def test_an_argument_must_fit_the_kind() -> None:
    with pytest.raises(ValidationError, match="fault 'dead' takes no seconds"):
        Fault(kind=FaultKind.DEAD, seconds=1.0)
    with pytest.raises(ValidationError, match="fault 'exception' needs code"):
        Fault(kind=FaultKind.EXCEPTION)


def test_only_a_crc_fault_spoils_a_share_of_the_answers() -> None:
    assert Fault(kind=FaultKind.CRC).share == 1.0
    assert Fault(kind=FaultKind.CRC, share=0.3).share == 0.3
    with pytest.raises(ValidationError, match="fault 'dead' takes no share"):
        Fault(kind=FaultKind.DEAD, share=0.5)
    with pytest.raises(ValidationError, match="share"):
        Fault(kind=FaultKind.CRC, share=0)
