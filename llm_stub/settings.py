"""Settings of the LLM stub, read from the environment once, and the per-request knobs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

__all__ = ["FAULTS", "Fault", "Knobs", "StubSettings", "parse_fault"]

Fault = Literal["500", "429", "cut", "stall"]
FAULTS: tuple[Fault, ...] = ("500", "429", "cut", "stall")


def parse_fault(value: str | None) -> Fault | None:
    """A fault name, or None for ``""``/``none``; anything else raises ValueError."""
    value = (value or "").strip().lower()
    if value in ("", "none", "off"):
        return None
    if value not in FAULTS:
        raise ValueError(f"unknown fault {value!r}; expected one of {', '.join(FAULTS)} or none")
    return cast(Fault, value)


def _number(raw: str | None, name: str, default: float) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Knobs:
    """How one response is paced and whether it fails.

    ``tokens_per_second`` 0 means as fast as possible; ``chunk_size`` is words per content chunk
    (and, times 8, characters per tool-argument fragment).
    """

    tokens_per_second: float = 200.0
    ttft_ms: float = 0.0
    chunk_size: int = 1
    fault: Fault | None = None

    def override(self, values: Mapping[str, str | None]) -> Knobs:
        """A copy with ``tps``, ``ttft``, ``chunk`` and ``fault`` replaced where given."""
        tps, ttft, chunk = values.get("tps"), values.get("ttft"), values.get("chunk")
        fault = values.get("fault")
        return Knobs(
            tokens_per_second=_number(tps, "tokens per second", self.tokens_per_second),
            ttft_ms=_number(ttft, "ttft", self.ttft_ms),
            chunk_size=max(1, int(_number(chunk, "chunk size", self.chunk_size))),
            fault=self.fault if fault is None else parse_fault(fault),
        )


@dataclass(frozen=True, slots=True)
class StubSettings:
    """The stub's configuration: default knobs, model name, and fault details."""

    knobs: Knobs = Knobs()
    model: str = "stub"
    stall_seconds: float = 300.0
    retry_after_seconds: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StubSettings:
        """Read ``STUB_TOKENS_PER_SECOND``, ``STUB_TTFT_MS``, ``STUB_CHUNK_SIZE``, ``STUB_FAULT``,
        ``STUB_MODEL``, ``STUB_STALL_SECONDS`` and ``STUB_RETRY_AFTER``; bad values raise."""
        env = os.environ if environ is None else environ
        knobs = Knobs().override(
            {
                "tps": env.get("STUB_TOKENS_PER_SECOND"),
                "ttft": env.get("STUB_TTFT_MS"),
                "chunk": env.get("STUB_CHUNK_SIZE"),
                "fault": env.get("STUB_FAULT"),
            }
        )
        return cls(
            knobs=knobs,
            model=env.get("STUB_MODEL", "").strip() or "stub",
            stall_seconds=_number(env.get("STUB_STALL_SECONDS"), "STUB_STALL_SECONDS", 300.0),
            retry_after_seconds=int(_number(env.get("STUB_RETRY_AFTER"), "STUB_RETRY_AFTER", 1)),
        )
