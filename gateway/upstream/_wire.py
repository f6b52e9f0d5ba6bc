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
from collections.abc import Mapping

from gateway.upstream._http import Deadline
from gateway.upstream._target import Target, open_tunnel
from gateway.upstream._wire_conn import (
    HIGH_WATER,
    Sink,
    Stale,
    WireConnection,
    WireResponse,
    encode,
)
from gateway.upstream.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout

__all__ = [
    "HIGH_WATER",
    "KEEPALIVE_EXPIRY",
    "Sink",
    "Target",
    "WireConnection",
    "WirePool",
    "WireResponse",
]

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection stays reusable (servers commonly close theirs after 5 s)."""


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
        self._idle: dict[tuple[str, str, int], list[WireConnection]] = {}
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
        request = encode(method, target, headers, body, self.what)
        conn = self._take(target.key)
        if conn is not None:
            try:
                return await conn.send(request, deadline)
            except Stale:
                pass  # closed while it sat in the pool: once more, on a fresh connection
        conn = await self._connect(target, deadline)
        try:
            return await conn.send(request, deadline)
        except Stale:
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

    def _take(self, key: tuple[str, str, int]) -> WireConnection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            self._n_idle -= 1
            if conn.is_open() and conn.loop.time() - conn.released_at < KEEPALIVE_EXPIRY:
                return conn
            conn.abort()
        return None

    def put(self, conn: WireConnection) -> None:
        if self._closed or self._n_idle >= self._max_idle:
            conn.abort()
            return
        self._idle.setdefault(conn.key, []).append(conn)
        self._n_idle += 1

    def forget(self, conn: WireConnection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            self._n_idle -= 1

    async def _connect(self, target: Target, deadline: Deadline) -> WireConnection:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.expired()
        context: ssl.SSLContext | None = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        proxy = target.proxy
        try:
            async with asyncio.timeout(min(self.connect_timeout, remaining)):
                if proxy is not None and context is not None:  # https: a tunnel, then TLS
                    return await self._tunnel(target, context)
                _, protocol = await loop.create_connection(
                    lambda: WireConnection(self, target.key),
                    target.host if proxy is None else proxy.host,
                    target.port if proxy is None else proxy.port,
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

    async def _tunnel(self, target: Target, context: ssl.SSLContext) -> WireConnection:
        raw = await open_tunnel(target)
        conn = WireConnection(self, target.key)
        try:
            tls = await asyncio.get_running_loop().start_tls(
                raw, conn, context, server_hostname=target.host
            )
        except BaseException:
            raw.close()
            raise
        if tls is None:
            raise ConnectionError("TLS through the proxy's tunnel did not start")
        conn.connection_made(tls)
        return conn
