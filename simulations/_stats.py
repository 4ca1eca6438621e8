"""Small figures shared by the scenarios."""

from __future__ import annotations

import math


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded for a report; None for None, infinities and NaN."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
