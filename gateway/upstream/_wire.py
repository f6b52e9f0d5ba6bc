"""A minimal HTTP/1.1 client for streamed responses on asyncio: the LLM stream's hot path.

httpx costs about twice the CPU per streamed chunk (``python -m bench.ingest``). Here: one
:class:`asyncio.Protocol` per connection, ``httptools`` parsing (chunked, ``Content-Length`` or
until-close bodies), the body handed over as bytes with one wake-up per socket read; keep-alive
connections pooled per (scheme, host, port), at most ``max_idle`` idle ones, reused within
:data:`KEEPALIVE_EXPIRY`; a pooled connection the server closed before a byte of the answer is
retried once on a fresh one (resending a chat request is harmless); TLS with the pool's
``ssl_context``; reading paused above :data:`HIGH_WATER` unread bytes. The idle limit (headers
included) and the total deadline are ONE timer per connection, re-armed lazily when it fires: a
received chunk only stores a timestamp (no cancel scope per read).

A body is read with ``read`` (bytes, one wake-up of the reader per socket read) or handed to a
callback as it arrives with ``pipe`` (no wake-up at all until the body ends: the relay's path).

Only a response read to its end gives its connection back to the pool; leaving early, an error or
a cancellation closes it. Errors are :class:`UpstreamError` subclasses.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.upstream._http import Deadline
from gateway.upstream.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["HIGH_WATER", "KEEPALIVE_EXPIRY", "Sink", "Target", "WirePool", "WireResponse"]

Sink = Callable[[bytes], bool]
"""Takes body bytes as they arrive; returns True when it needs no more of the body."""

HIGH_WATER = 256 * 1024
"""Unread body bytes above which the connection stops reading from the socket."""

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection stays reusable (servers commonly close theirs after 5 s)."""

_SLACK = 0.001  # timers may fire up to a clock tick early (uvloop's clock counts milliseconds)


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go: ``key`` picks the pool, ``authority`` is the Host header."""

    scheme: str
    host: str
    port: int
    authority: str
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Split an ``http://`` or ``https://`` URL; anything else raises ValueError."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, parts.netloc.rpartition("@")[2], path)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class _Stale(Exception):
    """The server closed the connection before sending a byte of the answer."""


class WirePool:
    """Keep-alive connections for streamed requests; :meth:`close` it when done."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        idle_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 64,
        what: str = "LLM",
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.what = what
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._n_idle = 0
        self._closed = False

    async def request(
        self,
        target: Target,
        headers: Mapping[str, str],
        body: bytes,
        deadline: Deadline,
        method: str = "POST",
    ) -> WireResponse:
        """Send a request and return once the response headers are in; close the response."""
        request = _encode(method, target, headers, body, self.what)
        conn = self._take(target.key)
        if conn is not None:
            try:
                return await conn.send(request, deadline)
            except _Stale:
                pass  # closed while it sat in the pool: once more, on a fresh connection
        conn = await self._connect(target, deadline)
        try:
            return await conn.send(request, deadline)
        except _Stale:
            raise UpstreamProtocolError(
                f"{self.what}: the server closed the connection without answering"
            ) from None

    def close(self) -> None:
        """Close the idle connections; connections in use close when their response does."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
        self._n_idle = 0

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            self._n_idle -= 1
            if conn.is_open() and conn.loop.time() - conn.released_at < KEEPALIVE_EXPIRY:
                return conn
            conn.abort()
        return None

    def _put(self, conn: _Connection) -> None:
        if self._closed or self._n_idle >= self._max_idle:
            conn.abort()
            return
        self._idle.setdefault(conn.key, []).append(conn)
        self._n_idle += 1

    def _forget(self, conn: _Connection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            self._n_idle -= 1

    async def _connect(self, target: Target, deadline: Deadline) -> _Connection:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.expired()
        context: ssl.SSLContext | None = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(min(self.connect_timeout, remaining)):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, target.key),
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                )
        except TimeoutError as exc:
            if remaining < self.connect_timeout:
                raise deadline.expired() from exc
            raise UpstreamTimeout(
                "connect", f"{self.what}: connect timed out after {self.connect_timeout}s"
            ) from exc
        except OSError as exc:  # refused, DNS, TLS (ssl.SSLError is an OSError)
            raise UpstreamConnectError(f"{self.what}: cannot connect ({exc})") from exc
        return protocol


class WireResponse:
    """A response whose headers are in; read its body, then :meth:`aclose` it (always)."""

    __slots__ = ("_conn", "headers", "status_code")

    def __init__(self, conn: _Connection) -> None:
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


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time; also the ``httptools`` callback target."""

    def __init__(self, pool: WirePool, key: tuple[str, str, int]) -> None:
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
            raise _Stale
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
            self.pool._put(self)
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
            self.pool._forget(self)
            return
        self._stop_timer()
        if self._complete or self._error is not None:
            pass
        elif self._headers_done and self._until_close and exc is None:
            self._complete = True  # the end of a body delimited by the connection's close
        elif not self._received:
            self._error = _Stale()
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


def _encode(
    method: str, target: Target, headers: Mapping[str, str], body: bytes, what: str
) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"host: {target.authority}"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise UpstreamProtocolError(f"{what}: a line break in the request header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    return "\r\n".join(lines).encode() + body
