"""When a cumulative counter (energy, kWh or kvarh) has gone backwards: one rule, one tolerance.

A meter's counter only grows; one read back lower was reset or the meter replaced, and nothing is booked
across it. The agent counts such steps per meter (the counter_resets metric), the collector's intervals
book no energy across them and the data-quality detector raises counter_reset alerts; all three ask this
module, so the metric and the alert cannot disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:  # numpy is not installed on a gateway
    import numpy as np
    import numpy.typing as npt

COUNTER_TOLERANCE = 0.01
"""How much lower a counter may read back (in its own unit) before it counts as gone backwards: rounding
in a meter's registers is not a reset."""


@overload
def went_backwards(before: float, after: float) -> bool: ...
@overload
def went_backwards(
    before: npt.NDArray[np.float64], after: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]: ...
def went_backwards(
    before: float | npt.NDArray[np.float64], after: float | npt.NDArray[np.float64]
) -> bool | npt.NDArray[np.bool_]:
    """Whether the counter went backwards from `before` to `after` (element-wise for arrays; False
    where either is NaN)."""
    return after < before - COUNTER_TOLERANCE
