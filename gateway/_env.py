"""Reading numbers from the environment: one parser for every settings object of the gateway."""

from __future__ import annotations

import math
from collections.abc import Mapping


def env_number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    above_minimum: bool = False,
) -> float:
    """``env[name]`` as a finite number ``>= minimum`` (``> minimum`` with ``above_minimum``);
    ``default`` when unset or blank. Anything else raises ``ValueError`` naming the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    too_small = value <= minimum if above_minimum else value < minimum
    if not math.isfinite(value) or too_small:
        bound = f"> {minimum:g}" if above_minimum else f">= {minimum:g}"
        raise ValueError(f"{name} must be a number {bound}, got {raw!r}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """``env[name]`` as a whole number ``>= minimum``; ``default`` when unset or blank."""
    value = env_number(env, name, default, minimum=minimum)
    if value != int(value):
        raise ValueError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)
