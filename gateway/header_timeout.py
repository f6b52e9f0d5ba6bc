"""A time limit on receiving a request's headers (the defence against slowloris).

uvicorn (0.55 as of this writing) has no header-read timeout: ``timeout_keep_alive`` runs only
between requests and is cancelled by any byte received, and nothing runs before the first
request. A client that sends half of its headers, or nothing at all, holds a connection (a file
descriptor, a parser, buffers) for as long as it likes: 300 such connections were all still
open after 35 s. No public uvicorn setting closes them.

:func:`header_timeout_protocol` returns a subclass of uvicorn's httptools protocol
(``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol``, the class ``http="httptools"``
selects; ``uvicorn.Config(http=...)`` takes a protocol class as well as a name) that keeps
one timer per connection:

- armed when the connection is made and when a request begins (httptools' ``on_message_begin``
  parser callback, so every request of a keep-alive connection is timed, not just the first);
- cancelled when that request's headers are complete (``on_headers_complete``) or the
  connection is lost;
- when it fires, the connection is closed. If no request of the connection has been read yet,
  the client first gets ``408 {"error": {"code": "header_timeout"}}``; otherwise a response may
  still be streaming on it (a pipelined request stalled behind it), so nothing is written.

Bodies and responses are not timed: a slow upload, or an SSE stream that lives an hour, is not
affected (bodies are limited by size elsewhere, streams by the SSE send time limit).

Only the overridden methods' public contracts are relied on: the asyncio ``Protocol`` methods
and the httptools callbacks, each calling ``super()`` first or last, and no attribute of the
parent. The timer's state lives in attributes of this subclass. Under another protocol (h11)
nothing of this applies; the gateway's server runs httptools.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeaderTimeoutProtocol", "header_timeout_protocol"]

DEFAULT_HEADER_TIMEOUT = 10.0

_BODY = orjson.dumps(
    {"error": {"code": "header_timeout", "message": "the request headers took too long"}}
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers do not arrive within
    ``header_timeout`` seconds (see the module docstring)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_transport: asyncio.Transport | None = None
        self._requests_read = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start timing the first request's headers."""
        super().connection_made(transport)  # type: ignore[arg-type]
        self._header_transport = transport  # type: ignore[assignment]
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        """A request begins: time its headers."""
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        """The headers arrived in time: stop timing."""
        self._cancel_header_timer()
        self._requests_read += 1
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop timing a connection that is gone."""
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            loop = asyncio.get_running_loop()
            self._header_timer = loop.call_later(self.header_timeout, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        transport = self._header_transport
        if transport is None or transport.is_closing():
            return
        if self._requests_read == 0:
            transport.write(_TIMED_OUT)
        transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)`` for a ``seconds`` limit."""
    if not seconds > 0:
        raise ValueError(f"the header timeout must be > 0 seconds, got {seconds!r}")
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})
