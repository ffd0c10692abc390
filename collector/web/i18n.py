"""The web app's words: one catalogue per language (``messages/<lang>.yaml``), the visitor's language, and
numbers and times written the way each language writes them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path

import yaml

from kilowatch.timebase import VIETNAM_TZ

MESSAGES = Path(__file__).parent / "messages"
MISSING = "\u2013"
"""Shown for a figure that does not exist (an en dash)."""
LANG_COOKIE = "lang"


class Lang(StrEnum):
    VI = "vi"
    EN = "en"


DEFAULT = Lang.VI


@cache
def catalogue(lang: Lang) -> dict[str, str]:
    """Every string of the pages in `lang`, by key."""
    with (MESSAGES / f"{lang}.yaml").open(encoding="utf-8") as f:
        loaded: dict[str, str] = yaml.safe_load(f)
    return loaded


def choose(asked: str | None, cookie: str | None) -> Lang:
    """`?lang=` when given and known, else the cookie's, else Vietnamese."""
    for candidate in (asked, cookie):
        if candidate is not None and candidate in Lang.__members__.values():
            return Lang(candidate)
    return DEFAULT


def number(value: float | None, digits: int, lang: Lang) -> str:
    """`value` rounded to `digits`, grouped by thousands: 1.234,5 in Vietnamese, 1,234.5 in English."""
    if value is None:
        return MISSING
    text = f"{value:,.{digits}f}"
    return text.translate(str.maketrans(",.", ".,")) if lang is Lang.VI else text


def percent(share: float | None, lang: Lang) -> str:
    return MISSING if share is None else f"{number(share * 100, 1, lang)} %"


def local_time(moment: datetime | None) -> str:
    """In Vietnam time, to the minute (the sites are in Vietnam whatever the visitor's browser says)."""
    return MISSING if moment is None else moment.astimezone(VIETNAM_TZ).strftime("%Y-%m-%d %H:%M")
