"""Calendars: TOU effective dates, Sunday, Tết, office hours and the site config's error messages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from collector.calendars import SiteCalendar
from collector.detectors.config import MeterConfig, SiteConfig, Tariff, Thresholds, load_sites
from kilowatch.calendars import Band, TouCalendar, is_public_holiday, window
from kilowatch.timebase import OFFSET_MS, VIETNAM_TZ, day_number
from kilowatch.yamlconfig import ConfigError
from tests.paths import REPO


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return round(datetime(year, month, day, hour, minute, tzinfo=VIETNAM_TZ).timestamp() * 1000)


def test_circular_16_bands_on_a_weekday() -> None:
    calendar = SiteCalendar()
    assert calendar.band_at(ms(2025, 6, 2, 9, 30)) is Band.PEAK
    assert calendar.band_at(ms(2025, 6, 2, 11, 29)) is Band.PEAK
    assert calendar.band_at(ms(2025, 6, 2, 11, 30)) is Band.NORMAL
    assert calendar.band_at(ms(2025, 6, 2, 19, 45)) is Band.PEAK
    assert calendar.band_at(ms(2025, 6, 2, 23, 0)) is Band.OFF_PEAK
    assert calendar.band_at(ms(2025, 6, 3, 3, 59)) is Band.OFF_PEAK


def test_sunday_has_no_peak() -> None:
    calendar = SiteCalendar()
    sunday = day_number(date(2025, 6, 8))
    assert Band.PEAK not in calendar.bands(sunday)
    assert calendar.band_at(ms(2025, 6, 8, 23, 0)) is Band.OFF_PEAK


def test_the_2026_calendar_takes_over_on_its_effective_date() -> None:
    calendar = SiteCalendar()
    assert calendar.tou_calendar(date(2026, 4, 30)).name == "circular-16-2014"
    assert calendar.tou_calendar(date(2026, 5, 1)).name == "decision-963-2026"
    assert calendar.band_at(ms(2026, 5, 4, 10, 0)) is Band.NORMAL
    assert calendar.band_at(ms(2026, 5, 4, 22, 0)) is Band.PEAK
    assert calendar.band_at(ms(2026, 5, 4, 23, 0)) is Band.NORMAL
    assert calendar.band_at(ms(2026, 5, 5, 5, 0)) is Band.OFF_PEAK


def test_a_site_defines_its_own_calendar_with_its_own_date() -> None:
    own = TouCalendar(
        name="own", effective_from=date(2025, 1, 1), peak=(window("18:00", "21:00"),), off_peak=()
    )
    calendar = SiteCalendar(tou=("circular-16-2014", own))
    assert calendar.band_at(ms(2025, 6, 2, 10, 0)) is Band.NORMAL
    assert calendar.band_at(ms(2024, 6, 3, 10, 0)) is Band.PEAK


def test_tet_and_national_day_are_closed() -> None:
    assert is_public_holiday(date(2025, 1, 29))  # Tết Ất Tỵ, first day
    assert is_public_holiday(date(2025, 9, 2))
    assert not is_public_holiday(date(2025, 6, 2))
    calendar = SiteCalendar()
    assert calendar.occupied_slots(day_number(date(2025, 1, 29))) == frozenset()
    assert calendar.occupied_slots(day_number(date(2025, 6, 8))) == frozenset()  # Sunday
    monday = calendar.occupied_slots(day_number(date(2025, 6, 2)))
    assert len(monday) == 32
    assert 30 in monday
    assert 46 not in monday


def test_overrides_close_and_open_days() -> None:
    calendar = SiteCalendar(closed_days=(date(2025, 6, 2),), working_days=(date(2025, 6, 8),))
    assert calendar.occupied_slots(day_number(date(2025, 6, 2))) == frozenset()
    assert len(calendar.occupied_slots(day_number(date(2025, 6, 8)))) == 32


def test_vietnam_is_utc_plus_seven() -> None:
    assert OFFSET_MS == 7 * 3_600_000
    assert SiteCalendar().in_shift(ms(2025, 6, 2, 8, 0))
    assert not SiteCalendar().in_shift(ms(2025, 6, 2, 12, 0))


def test_astronomical_window_follows_the_sun() -> None:
    fixed = SiteCalendar()
    astro = SiteCalendar.model_validate({"lighting": {"mode": "astronomical"}})
    day = day_number(date(2025, 6, 21))
    assert fixed.dark(day) == (ms(2025, 6, 21, 19, 0), ms(2025, 6, 22, 4, 30))
    on, off = astro.dark(day)
    assert ms(2025, 6, 21, 18, 30) < on < ms(2025, 6, 21, 19, 0)
    assert ms(2025, 6, 22, 5, 0) < off < ms(2025, 6, 22, 5, 30)


def test_a_bad_setting_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(
        "sites:\n  ubnd:\n    calendar:\n      tou: [circular-16-2015]\n"
        "    meters:\n      ubnd.main: {role: office_main, rated_kw: -3}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as error:
        load_sites(path)
    problems = "\n".join(error.value.problems)
    assert "sites.yaml:4 sites.ubnd.calendar.tou" in problems
    assert "circular-16-2015" in problems
    assert "sites.yaml:6 sites.ubnd.meters.ubnd.main.rated_kw" in problems


SITES_EXAMPLE = REPO / "deploy" / "sites.example.yaml"


def test_the_sites_example_loads_shows_every_key_and_its_first_site_keeps_the_defaults() -> None:
    sites = load_sites(SITES_EXAMPLE).sites
    first = sites["so-cong-thuong"]
    defaults = SiteConfig()
    assert (first.calendar, first.tariff, first.thresholds, first.poll_s) == (
        defaults.calendar,
        defaults.tariff,
        defaults.thresholds,
        defaults.poll_s,
    )
    text = SITES_EXAMPLE.read_text()

    def keys(model: type[BaseModel]) -> Iterator[str]:
        for name, field in model.model_fields.items():
            yield name
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                yield from keys(field.annotation)

    for model in (SiteCalendar, Tariff, Thresholds, MeterConfig):
        for key in keys(model):
            assert f"{key}:" in text, f"{model.__name__}.{key} missing from {SITES_EXAMPLE.name}"
    assert sites["nha-may-co-khi"].meters["nha-may-co-khi.press"].large
    assert sites["tu-chieu-sang-01"].calendar.lighting.mode == "astronomical"
