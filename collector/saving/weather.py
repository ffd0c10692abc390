"""A monthly weather model per unit, judged by ASHRAE Guideline 14, and the saving it normalises.

kWh per day of a month = a + b * cooling degree days per day + c * heating degree days per day (base 18 °C,
from daily mean outdoor temperature), fitted by least squares on last year's complete months. Guideline 14
accepts a monthly model with CV(RMSE) <= 15 % and |NMBE| <= 5 %; only then is this year's use set against
what the model predicts for this year's weather (the avoided-energy approach of IPMVP option C).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collector.saving.figures import Use

Temperatures = dict[date, float]
"""Daily mean outdoor temperature, °C, by Vietnam date."""

BASE_C = 18.0
"""Balance point of the degree days."""
MAX_CV_RMSE = 0.15
MAX_NMBE = 0.05
MIN_MONTHS = 9
"""Months a model needs (Guideline 14 asks for a full year; a few missing months are tolerated)."""


class TemperatureError(ValueError):
    """The temperature file cannot be read; the message names the file and the line."""


def load_temperatures(path: Path) -> Temperatures:
    """The `date,temperature_c` CSV file at `path`."""
    temperatures: Temperatures = {}
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    temperatures[date.fromisoformat(row["date"])] = float(row["temperature_c"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise TemperatureError(f"{path}:{line}: expected date,temperature_c ({exc})") from None
    except OSError as exc:
        raise TemperatureError(f"{path}: {exc.strerror}") from exc
    return temperatures


def _degree_days(first: date, last: date, temperatures: Temperatures) -> tuple[float, float] | None:
    """Mean cooling and heating degree days per day over the days, None if a day has no temperature."""
    cooling = heating = 0.0
    days = 0
    d = first
    while d <= last:
        t = temperatures.get(d)
        if t is None:
            return None
        cooling += max(t - BASE_C, 0.0)
        heating += max(BASE_C - t, 0.0)
        days += 1
        d += timedelta(days=1)
    return cooling / days, heating / days


@dataclass(frozen=True)
class WeatherModel:
    coefficients: tuple[float, float, float]
    cv_rmse: float
    nmbe: float

    @property
    def passes(self) -> bool:
        return self.cv_rmse <= MAX_CV_RMSE and abs(self.nmbe) <= MAX_NMBE

    @classmethod
    def fit(cls, months: Sequence[Use], temperatures: Temperatures) -> WeatherModel | None:
        """Fitted on `months` (each with a known kWh); None with too few months or temperatures."""
        rows, y = [], []
        for use in months:
            dd = _degree_days(use.first, use.last, temperatures)
            if dd is None or use.kwh_per_day is None:
                continue
            rows.append((1.0, *dd))
            y.append(use.kwh_per_day)
        parameters = 3
        if len(y) < max(MIN_MONTHS, parameters + 1):
            return None
        x, observed = np.array(rows), np.array(y)
        coefficients, *_ = np.linalg.lstsq(x, observed, rcond=None)
        residuals = observed - x @ coefficients
        mean = float(observed.mean())
        if mean <= 0:
            return None
        dof = len(y) - parameters
        cv = float(np.sqrt((residuals**2).sum() / dof)) / mean
        nmbe = float(residuals.sum()) / (dof * mean)
        a, b, c = (float(v) for v in coefficients)
        return cls((a, b, c), cv, nmbe)

    def predict_kwh(self, use: Use, temperatures: Temperatures) -> float | None:
        """The period's kWh the model expects for its weather."""
        dd = _degree_days(use.first, use.last, temperatures)
        if dd is None:
            return None
        a, b, c = self.coefficients
        return (a + b * dd[0] + c * dd[1]) * use.days


def normalised_saving(
    model: WeatherModel, months: Sequence[Use], temperatures: Temperatures
) -> tuple[float | None, float | None]:
    """(kWh the model expects for `months`' weather, kWh they used); None where a month lacks either."""
    expected = actual = 0.0
    for use in months:
        predicted = model.predict_kwh(use, temperatures)
        if predicted is None or use.kwh is None:
            return None, None
        expected += predicted
        actual += use.kwh
    return expected, actual
