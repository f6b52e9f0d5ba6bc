"""Fault injection and request statistics of the stub.

A request's knobs come, lowest priority first, from the environment (``StubSettings``), a fault
armed through ``POST /_stub/faults`` (consumed one per request, only by requests that do not
name their own fault), the ``X-Stub-*`` headers, and ``[[stub:key=value]]`` directives in the
user messages (keys ``fault``, ``tps``, ``ttft``, ``chunk``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from llm_stub.settings import Fault, Knobs, parse_fault

__all__ = ["HEADERS", "FaultBoard", "parse_directives", "resolve_knobs", "strip_directives"]

HEADERS: Mapping[str, str] = {
    "x-stub-tokens-per-second": "tps",
    "x-stub-ttft-ms": "ttft",
    "x-stub-chunk-size": "chunk",
    "x-stub-fault": "fault",
}
_DIRECTIVE = re.compile(r"\[\[stub:([^\]]*)\]\]")
_KEYS = frozenset(HEADERS.values())


def parse_directives(texts: Iterable[str]) -> dict[str, str]:
    """The ``key=value`` pairs of every ``[[stub:...]]`` directive (comma or space separated)."""
    found: dict[str, str] = {}
    for text in texts:
        for body in _DIRECTIVE.findall(text):
            for item in re.split(r"[,\s]+", body.strip()):
                key, eq, value = item.partition("=")
                if eq and key.strip().lower() in _KEYS:
                    found[key.strip().lower()] = value.strip()
    return found


def strip_directives(text: str) -> str:
    """``text`` without its directives, whitespace collapsed at the seams."""
    return re.sub(r"[ \t]{2,}", " ", _DIRECTIVE.sub("", text)).strip()


class FaultBoard:
    """Faults armed for the next N requests, and counters of what was served.

    Lives on one app's state and is only touched from its event loop, so it needs no lock.
    """

    def __init__(self) -> None:
        self._armed: Fault | None = None
        self._remaining = 0
        self._requests = 0
        self._streamed = 0
        self._faults: Counter[str] = Counter()

    def arm(self, fault: Fault | None, times: int) -> None:
        """Make the next ``times`` requests fail with ``fault`` (None or 0 disarms)."""
        self._armed = fault if times > 0 else None
        self._remaining = times if fault is not None else 0

    def take(self) -> Fault | None:
        """The armed fault for this request, if any, counting it down."""
        if self._armed is None or self._remaining <= 0:
            return None
        self._remaining -= 1
        fault = self._armed
        if self._remaining == 0:
            self._armed = None
        return fault

    def record(self, *, streamed: bool, fault: Fault | None) -> None:
        """Count one chat completion request and the fault it got, if any."""
        self._requests += 1
        self._streamed += int(streamed)
        if fault is not None:
            self._faults[fault] += 1

    def stats(self) -> dict[str, Any]:
        """The counters as served by ``GET /_stub/stats``."""
        return {
            "requests": self._requests,
            "streamed": self._streamed,
            "faults": dict(self._faults),
            "armed": {"fault": self._armed, "remaining": self._remaining},
        }


def resolve_knobs(
    base: Knobs, board: FaultBoard, headers: Mapping[str, str], directives: Mapping[str, str]
) -> Knobs:
    """The knobs of one request; invalid header or directive values raise ValueError."""
    from_headers = {key: headers[name] for name, key in HEADERS.items() if name in headers}
    explicit: dict[str, str | None] = {**from_headers, **directives}
    if "fault" not in explicit:
        armed = board.take()
        if armed is not None:
            base = Knobs(base.tokens_per_second, base.ttft_ms, base.chunk_size, parse_fault(armed))
    return base.override(explicit)
