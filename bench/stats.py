"""Percentiles and small helpers for reporting."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pct(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank (the ⌈q·n⌉-th smallest: the
    p99 of 100 samples is the 99th, of 1,000 the 990th); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def ms(ns_values: Sequence[int]) -> list[float]:
    return [v / 1e6 for v in ns_values]


def summary_ms(ns_values: Sequence[int]) -> dict[str, float | None]:
    """p50 / p99 / max in milliseconds of nanosecond samples."""
    values = ms(ns_values)
    return {
        "p50": _r(pct(values, 0.50)),
        "p99": _r(pct(values, 0.99)),
        "max": _r(max(values) if values else None),
    }


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def rnd(value: float | None, digits: int = 2) -> float | None:
    return _r(value, digits)
