"""Whole numbers read from the wire (query parameters, headers): ASCII digits only.

Python's ``str.isdigit()`` is true for ``²`` and ``٣`` and ``int()`` accepts ``٣`` (as 3) but
not ``²`` (ValueError), ``int()`` also takes ``" 7"``, ``"+7"`` and ``"7_0"``, and refuses more
than 4,300 digits. A parser built from those two answers some inputs with a traceback and
silently reads others as a different number. HTTP's grammar for ``Content-Length``,
``Retry-After`` (delta-seconds) and our cursors is ``1*DIGIT`` with ``DIGIT = %x30-39``
(RFC 9110 §5.6.1 and RFC 5234 appendix B.1): that, and nothing else, is what this module reads.
"""

from __future__ import annotations

__all__ = ["MAX_DIGITS", "parse_decimal"]

MAX_DIGITS = 18
"""The longest number accepted: 18 digits stay below 2**63 (what Redis and JSON readers hold)."""

_DIGITS = frozenset("0123456789")


def parse_decimal(text: str | None) -> int | None:
    """``text`` as a non-negative integer when it is 1 to ``MAX_DIGITS`` ASCII digits, else
    ``None`` (empty, signs, spaces, underscores, non-ASCII digits, too long)."""
    if not text or len(text) > MAX_DIGITS or not _DIGITS.issuperset(text):
        return None
    return int(text)
