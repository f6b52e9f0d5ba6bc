"""A prototype of ``ChatClient.stream_chat`` over a raw asyncio HTTP/1.1 reader (no httpx).

It exists to measure what the relay would cost with an efficient upstream reader (the proposed
change to ``gateway/upstream/openai.py``): one ``asyncio.Protocol`` per keep-alive connection
that de-chunks the body in place and wakes the reader once per ``data_received``; the idle and
total time limits are one lazily re-armed timer per connection instead of a cancel scope per
chunk. The SSE parsing and chunk assembly are the gateway's own (``SSEDecoder``,
``ChatAssembler``), so the events are identical. Not done here: retries, TLS, proxies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from gateway.upstream import (
    ChatEvent,
    SSEDecoder,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamSettings,
    UpstreamTimeout,
)
from gateway.upstream.chat import ChatAssembler


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection; ``read()`` returns de-chunked body bytes (b"" at the end)."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.head: bytes | None = None
        self._buf = bytearray()
        self._body: list[bytes] = []
        self._chunk_left = 0
        self._chunked = True
        self.ended = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.ended:
            self.error = UpstreamProtocolError("LLM: the connection closed mid-response")
        self._wake()

    def start(self, request: bytes) -> None:
        """Send a request; reset the response state and arm the idle timer."""
        self.head, self._body, self.ended, self.error = None, [], False, None
        self._buf.clear()
        self._chunk_left = 0
        assert self.transport is not None
        self.transport.write(request)
        self._last = time.monotonic()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + self.idle, self._check_idle)

    def _check_idle(self) -> None:
        quiet = time.monotonic() - self._last
        if self.ended or self.transport is None:
            return
        if quiet >= self.idle:
            self.error = UpstreamTimeout("idle", f"LLM: nothing received for {self.idle}s")
            self._wake()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + self.idle - quiet, self._check_idle)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        self._last = time.monotonic()
        buf = self._buf
        buf += data
        if self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = bytes(buf[:end])
            del buf[: end + 4]
            self._chunked = b"transfer-encoding: chunked" in self.head.lower()
        if self._chunked:
            self._dechunk()
        else:
            if buf:
                self._body.append(bytes(buf))
                buf.clear()
        self._wake()

    def _dechunk(self) -> None:
        buf = self._buf
        pos = 0
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(buf) - pos)
                if take <= 0:
                    break
                self._body.append(bytes(buf[pos : pos + take]))
                pos += take
                self._chunk_left -= take
                if self._chunk_left:
                    break
                pos += 2
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            if end == pos:
                pos += 2
                continue
            size = int(buf[pos:end].split(b";", 1)[0], 16)
            pos = end + 2
            if size == 0:
                self.ended = True
                break
            self._chunk_left = size
        del buf[: min(pos, len(buf))]

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._body and not self.ended and self.error is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._body:
            out = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
            return out
        if self.error is not None:
            raise self.error
        return b""


class RawChatClient:
    """``stream_chat`` like ``ChatClient``'s, over a pool of raw keep-alive connections."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        url = urlsplit(settings.llm_base_url.rstrip("/") + "/chat/completions")
        if url.scheme != "http":
            raise ValueError("the raw reader prototype speaks plain http only")
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 80
        self._path = url.path
        self._idle: list[_Conn] = []

    @property
    def model(self) -> str:
        return self._settings.llm_model

    async def aclose(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()

    async def _connect(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._settings.llm_connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _Conn(self._settings.llm_idle_timeout), self._host, self._port
                )
        except TimeoutError as exc:
            raise UpstreamTimeout("connect", "LLM: connect timed out") from exc
        except OSError as exc:
            raise UpstreamConnectError(f"LLM: cannot connect: {exc}") from exc
        return proto

    def _request(self, body: bytes, headers: Mapping[str, str] | None) -> bytes:
        lines = [
            f"POST {self._path} HTTP/1.1",
            f"host: {self._host}:{self._port}",
            "content-type: application/json",
            "accept: text/event-stream",
            f"content-length: {len(body)}",
        ]
        if self._settings.llm_api_key:
            lines.append("authorization: Bearer " + self._settings.llm_api_key)
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Yield ``ContentDelta`` / ``ToolCallDelta``, then one ``ChatResult``."""
        payload: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if tools:
            payload["tools"] = list(tools)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        payload.update(params)
        conn = await self._connect()
        reusable = False
        try:
            conn.start(self._request(orjson.dumps(payload), headers))
            decoder = SSEDecoder()
            assembler = ChatAssembler()
            first = await conn.read()
            head = conn.head or b""
            status = int(head.split(b" ", 2)[1]) if head else 0
            if status >= 400:
                raise UpstreamHTTPError(f"LLM: HTTP {status}", status)
            done = False
            data = first
            while True:
                for sse in decoder.feed(data):
                    if sse.data.strip() == "[DONE]":
                        done = True
                        continue
                    try:
                        chunk = orjson.loads(sse.data)
                    except orjson.JSONDecodeError as exc:
                        raise UpstreamProtocolError("LLM: a chunk is not JSON") from exc
                    for event in assembler.feed(chunk):
                        yield event
                if conn.ended:
                    break
                data = await conn.read()
            if not done and assembler.finish_reason is None:
                raise UpstreamProtocolError("LLM: the stream ended before [DONE]")
            reusable = True
            yield assembler.result()
        finally:
            conn.stop_timer()
            if reusable and conn.transport is not None:
                self._idle.append(conn)
            elif conn.transport is not None:
                conn.transport.close()
