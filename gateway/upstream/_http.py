"""Shared plumbing of the upstream clients: total deadlines, shielded closing, error bodies."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import anyio
import httpx
import orjson

from gateway.upstream.errors import UpstreamHTTPError, UpstreamTimeout

__all__ = [
    "CLOSE_TIMEOUT",
    "Deadline",
    "OwnedHttp",
    "aclose_quietly",
    "http_error",
    "parse_retry_after",
    "status_error",
]

CLOSE_TIMEOUT = 2.0
"""Seconds a shielded close of a response may take before it is abandoned."""


class Deadline:
    """A total time limit for one upstream call, retries and stream included."""

    def __init__(self, seconds: float, what: str) -> None:
        self._seconds = seconds
        self._what = what
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._at - time.monotonic())

    def expired(self) -> UpstreamTimeout:
        """The error to raise once the deadline has passed."""
        return UpstreamTimeout("total", f"{self._what}: no complete answer within {self._seconds}s")

    @contextmanager
    def limit(self) -> Iterator[None]:
        """Run the block within the time left; raise :class:`UpstreamTimeout` when it runs out.

        Wrap single awaits with it, never a ``yield`` of an async generator: a cancel scope
        must not stay open while the consumer's code runs.
        """
        remaining = self.remaining()
        if remaining <= 0:
            raise self.expired()
        try:
            with anyio.fail_after(remaining):
                yield
        except TimeoutError as exc:
            raise self.expired() from exc


async def aclose_quietly(response: httpx.Response) -> None:
    """Close ``response`` even while the caller is being cancelled, giving up after a while."""
    with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
        await response.aclose()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def status_error(
    status_code: int, headers: Mapping[str, str], body: bytes, what: str
) -> UpstreamHTTPError:
    """An :class:`UpstreamHTTPError` for a non-2xx answer, with the upstream's own message.

    ``headers`` is looked up with lower-case names (``httpx.Headers`` or a lower-cased dict).
    """
    message = body[:300].decode("utf-8", errors="replace").strip()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("message"))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error:
            message = str(error)[:300]
    text = f"{what}: HTTP {status_code}" + (f": {message}" if message else "")
    return UpstreamHTTPError(text, status_code, parse_retry_after(headers.get("retry-after")))


def http_error(response: httpx.Response, body: bytes, what: str) -> UpstreamHTTPError:
    """:func:`status_error` for an ``httpx`` response."""
    return status_error(response.status_code, response.headers, body, what)


class OwnedHttp:
    """Base of the upstream clients: an ``httpx.AsyncClient`` closed by whoever created it,
    and ``async with`` support."""

    _http: httpx.AsyncClient
    _owns_http: bool

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
