"""One HTTP/1.1 connection of the wire client (:mod:`gateway.upstream._wire`), and its response.

An :class:`asyncio.Protocol` that is also the ``httptools`` callback target: one request at a
time, the body handed over as bytes (``read``) or to a sink from the read callback (``pipe``),
reading paused above :data:`HIGH_WATER` unread bytes, one lazily re-armed timer for the idle
and total limits. Its pool (:class:`WireOwner`) takes it back when a body was read to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol, cast

import httptools

from gateway.upstream._http import Deadline
from gateway.upstream._target import Target
from gateway.upstream.errors import UpstreamProtocolError, UpstreamTimeout

__all__ = ["HIGH_WATER", "Sink", "Stale", "WireConnection", "WireOwner", "WireResponse", "encode"]

Sink = Callable[[bytes], bool]
"""Takes body bytes as they arrive; returns True when it needs no more of the body."""

HIGH_WATER = 256 * 1024
"""Unread body bytes above which the connection stops reading from the socket."""

_SLACK = 0.001  # timers may fire up to a clock tick early (uvloop's clock counts milliseconds)


class Stale(Exception):
    """The server closed the connection before sending a byte of the answer."""


class WireOwner(Protocol):
    """What a connection needs of its pool."""

    what: str
    idle_timeout: float

    def put(self, conn: WireConnection) -> None:
        """Take back a connection whose response was read to its end."""

    def forget(self, conn: WireConnection) -> None:
        """Drop an idle connection the server closed."""


class WireResponse:
    """A response whose headers are in; read its body, then :meth:`aclose` it (always)."""

    __slots__ = ("_conn", "headers", "status_code")

    def __init__(self, conn: WireConnection) -> None:
        self._conn = conn
        self.status_code = conn.status
        self.headers: Mapping[str, str] = conn.headers
        """Lower-case names; a repeated header's values are joined with ", "."""

    async def read(self) -> bytes:
        """All body bytes received since the last call, waiting for some; b"" at the end."""
        return await self._conn.read()

    async def pipe(self, sink: Sink) -> None:
        """Hand the body to ``sink`` as it arrives, from the connection's reader, until the body
        ends or ``sink`` returns True; what ``sink`` raises is raised here (and closes the
        connection). ``sink`` runs inside the event loop's read callback: it must not block."""
        await self._conn.pipe(sink)

    async def aread(self) -> bytes:
        """The rest of the body."""
        parts = []
        while data := await self._conn.read():
            parts.append(data)
        return b"".join(parts)

    async def finish(self, grace: float = 0.5) -> None:
        """Discard what is left of the body, waiting for its end for ``grace`` seconds at most.

        Called after the last event the caller needs (``[DONE]``): the end of the body normally
        follows at once and lets the connection be reused; a server that keeps the body open
        costs ``grace`` and the connection.
        """
        await self._conn.drain(grace)

    async def aclose(self) -> None:
        """Give the connection back to the pool if the body was read to its end, else close it."""
        self._conn.release()


class WireConnection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time; also the ``httptools`` callback target."""

    def __init__(self, pool: WireOwner, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost = self._active = False
        self.released_at = self._deadline_at = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._deadline = Deadline(0, pool.what)
        self._timer: asyncio.TimerHandle | None = None
        self._start()

    def _start(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers_done = self._until_close = self._complete = self._keep_alive = False
        self._received = self._paused = False
        self._body: list[bytes] = []
        self._unread = 0
        self._sink: Sink | None = None
        self._piped = False  # the sink needs no more
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last = 0.0

    # -- the request side --------------------------------------------------------------------

    async def send(self, request: bytes, deadline: Deadline) -> WireResponse:
        if self.lost or self.transport is None:
            raise Stale
        self._start()
        self._active = True
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)
        self._deadline = deadline
        self._last = self.loop.time()
        self._deadline_at = self._last + deadline.remaining()
        self._timer = self.loop.call_at(
            min(self._last + self.pool.idle_timeout, self._deadline_at), self._on_timer
        )
        try:
            while True:
                if self._error is not None:
                    raise self._error
                if self._headers_done:
                    break
                await self._wait()
        except BaseException:
            self.abort()
            raise
        return WireResponse(self)

    async def read(self) -> bytes:
        while True:
            if self._body:
                return self._take_body()
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            await self._wait()

    async def pipe(self, sink: Sink) -> None:
        if self._body and sink(self._take_body()):
            return
        self._sink = sink
        try:
            while True:
                if self._error is not None:
                    raise self._error
                if self._piped or self._complete:
                    return
                await self._wait()
        finally:
            self._sink = None

    async def drain(self, grace: float) -> None:
        until = self.loop.time() + grace
        while not self._complete and self._error is None:
            left = until - self.loop.time()
            if left <= 0:
                return
            waiter = self._waiter = self.loop.create_future()
            handle = self.loop.call_later(left, _resolve, waiter)
            try:
                await waiter
            finally:
                handle.cancel()
                self._waiter = None
            self._take_body()  # discarded

    def release(self) -> None:
        if not self._active:
            return
        self._stop_timer()
        self._active = False
        if self._complete and self._keep_alive and self._error is None and self.is_open():
            self._body = []
            self.released_at = self.loop.time()
            self.pool.put(self)
        else:
            self.abort()

    def is_open(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def abort(self) -> None:
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def _take_body(self) -> bytes:
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        self._unread = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def _wait(self) -> None:
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self.abort()
        self._wake()

    # -- time limits: one timer, re-armed when it fires ----------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        if not self._active or self._complete or self._error is not None:
            return
        now = self.loop.time()
        idle = self.pool.idle_timeout
        if now >= self._deadline_at - _SLACK:
            self._fail(self._deadline.expired())
            return
        if self._paused or self._body:
            self._last = now  # the caller is behind, not the upstream
        elif now - self._last >= idle - _SLACK:
            self._fail(UpstreamTimeout("idle", f"{self.pool.what}: no data within {idle}s"))
            return
        self._timer = self.loop.call_at(min(self._last + idle, self._deadline_at), self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self._active:
            self.pool.forget(self)
            return
        self._stop_timer()
        if self._complete or self._error is not None:
            pass
        elif self._headers_done and self._until_close and exc is None:
            self._complete = True  # the end of a body delimited by the connection's close
        elif not self._received:
            self._error = Stale()
        else:
            self._error = UpstreamProtocolError(
                f"{self.pool.what}: connection broke (closed mid-response)"
            )
        self._wake()

    def data_received(self, data: bytes) -> None:
        if not self._active:  # nothing asked for: the connection cannot be trusted any more
            self.abort()
            return
        self._received = True
        self._last = self.loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self._complete:
                self._fail(UpstreamProtocolError(f"{self.pool.what}: bad HTTP response ({exc})"))
                return
            self._keep_alive = False  # bytes after the response: do not reuse the connection
        if self._unread > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if self._sink is None or self._complete:  # a piped body wakes its reader at the end
            self._wake()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._keep_alive = False  # a second response nobody asked for

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        raw, self._raw_headers = self._raw_headers, []
        if status < 200:
            return  # informational (103 Early Hints …): the real response follows
        headers = self.headers
        for raw_name, raw_value in raw:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.status = status
        self._headers_done = True
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._until_close = not chunked and "content-length" not in headers
        encoding = headers.get("content-encoding", "identity")
        if encoding.lower() != "identity":  # none was asked for (accept-encoding: identity)
            self._fail(UpstreamProtocolError(f"{self.pool.what}: content-encoding {encoding!r}"))

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is None:
            self._body.append(body)
            self._unread += len(body)
            return
        if self._error is not None:
            return
        try:
            if sink(body):
                self._sink = None
                self._piped = True
        except BaseException as exc:  # raised by ``pipe``; the connection cannot be reused
            self._sink = None
            self._fail(exc)

    def on_message_complete(self) -> None:
        if not self._headers_done:
            return  # the end of an informational response
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True
        self._stop_timer()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def encode(
    method: str, target: Target, headers: Mapping[str, str], body: bytes, what: str
) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"host: {target.authority}"]
    if target.proxy is not None and target.proxy.authorization and target.scheme == "http":
        lines.append(f"proxy-authorization: {target.proxy.authorization}")
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise UpstreamProtocolError(f"{what}: a line break in the request header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    return "\r\n".join(lines).encode() + body
