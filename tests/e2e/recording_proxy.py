"""An HTTP proxy between the gateway and a real model server that records what the model sent.

It forwards each request to the model server and passes the answer back event by event: every
Server-Sent Event of a streamed completion is written to the gateway as one HTTP chunk, and the
time its last bytes were handed to the socket is recorded (``time.monotonic_ns``): the moment
the model "sent" that token, as the gateway sees it. A test compares it with the time its SSE
client received the same text from the gateway.

Two deliberate changes, both to make a real model usable in a test:

- ``pin`` values are set in the request body where the gateway did not set them (e.g.
  ``temperature: 0`` and ``max_tokens``), so runs are repeatable and turns are bounded.
- Each event's JSON is re-encoded with raw UTF-8 (the same JSON value: some servers write
  ``\\uXXXX`` escapes, others raw bytes), and with ``split_utf8`` an event holding a multi-byte
  character is written in two TCP writes cut in the middle of that character's bytes, with a
  short pause between them so the gateway reads them apart. ``splits`` counts them.

Runs its own event loop in a thread (:class:`tests.e2e.loop_thread.LoopThreadServer`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from gateway.upstream.sse import SSEDecoder
from tests.e2e.loop_thread import LoopThreadServer

SPLIT_PAUSE = 0.005
"""Seconds between the two halves of a split event: long enough for the gateway to read the
first half on its own (traffic shaping, not a wait for anything)."""

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Sent:
    """One event as written to the gateway: when its last bytes went out, and its data."""

    at_ns: int
    data: Any  # the decoded JSON of the event, or the raw text (``[DONE]``)

    @property
    def text(self) -> str:
        """The content this event adds to the answer ('' when it adds none)."""
        if not isinstance(self.data, dict):
            return ""
        for choice in self.data.get("choices") or ():
            if choice.get("index", 0) == 0:
                piece = (choice.get("delta") or {}).get("content")
                return piece if isinstance(piece, str) else ""
        return ""


@dataclass
class Exchange:
    """One request of the gateway and what was sent back for it."""

    path: str
    request: Any
    status: int = 0
    splits: int = 0  # events written cut inside a character
    events: list[Sent] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The whole content the model streamed in this answer."""
        return "".join(event.text for event in self.events)

    def first_visible(self) -> Sent | None:
        """The first event whose content holds a non-whitespace character."""
        return next((event for event in self.events if event.text.strip()), None)


class RecordingProxy(LoopThreadServer):
    """Forwards ``127.0.0.1:<port>`` to the model server at ``target`` (a base URL)."""

    def __init__(
        self, target: str, *, pin: Mapping[str, Any] | None = None, split_utf8: bool = True
    ) -> None:
        super().__init__()
        self.target = target.rstrip("/")
        self.pin = dict(pin or {})
        self.split_utf8 = split_utf8
        self.splits = 0
        self.exchanges: list[Exchange] = []

    @property
    def url(self) -> str:
        """The proxy's base URL (the model server's paths apply: ``/v1/chat/completions``)."""
        return f"http://127.0.0.1:{self.port}"

    def chats(self) -> list[Exchange]:
        """The chat completion exchanges so far, in order."""
        return [e for e in list(self.exchanges) if e.path.endswith("/chat/completions")]

    async def _serve(self) -> None:
        assert self._stop is not None
        timeout = httpx.Timeout(300.0, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            server = await asyncio.start_server(
                lambda r, w: self._handle(client, r, w), "127.0.0.1", self.port
            )
            self._ready.set()
            async with server:
                await self._stop.wait()
                server.close()
                for handler in list(self._handlers):
                    handler.cancel()
                if self._handlers:
                    await asyncio.wait(list(self._handlers), timeout=5)

    async def _handle(
        self, client: httpx.AsyncClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._track_handler()
        sock = writer.get_extra_info("socket")
        if sock is not None:  # each write goes out at once: the split halves stay apart
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while (request := await _read_request(reader)) is not None:
                await self._exchange(client, writer, *request)
        except (ConnectionError, OSError, httpx.HTTPError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        exchange = Exchange(path, None)
        if body and headers.get("content-type", "").startswith("application/json"):
            request = orjson.loads(body)
            for key, value in self.pin.items():
                request.setdefault(key, value)
            exchange.request = request
            body = orjson.dumps(request)
        self.exchanges.append(exchange)
        forward = {
            k: v for k, v in headers.items() if k in ("content-type", "accept", "authorization")
        }
        upstream = client.build_request(method, self.target + path, content=body, headers=forward)
        response = await client.send(upstream, stream=True)
        try:
            exchange.status = response.status_code
            content_type = response.headers.get("content-type", "application/octet-stream")
            if not content_type.startswith("text/event-stream"):
                whole = await response.aread()
                head = _head(response.status_code, content_type, f"content-length: {len(whole)}")
                writer.write(head + whole)
                await writer.drain()
                return
            writer.write(_head(response.status_code, content_type, "transfer-encoding: chunked"))
            await writer.drain()
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    await self._send_event(writer, exchange, event.data)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            await response.aclose()

    async def _send_event(self, writer: asyncio.StreamWriter, exchange: Exchange, raw: str) -> None:
        data: Any = raw
        if raw.strip() != "[DONE]":
            data = orjson.loads(raw)
            raw = orjson.dumps(data).decode()  # raw UTF-8, no escapes
        frame = b"data: " + raw.encode() + b"\n\n"
        cut = _inside_a_character(frame) if self.split_utf8 else None
        writer.write(b"%x\r\n" % len(frame))
        if cut is not None:
            writer.write(frame[:cut])
            await writer.drain()
            self.splits += 1
            exchange.splits += 1
            await asyncio.sleep(SPLIT_PAUSE)
            frame = frame[cut:]
        # Stamped just before the last bytes are handed to the socket: the lag measured from it
        # is never less than the true one (after the write, this thread may wait for the GIL).
        sent = Sent(time.monotonic_ns(), data)
        writer.write(frame + b"\r\n")
        exchange.events.append(sent)
        await writer.drain()


def _inside_a_character(frame: bytes) -> int | None:
    """A cut position just after the lead byte of the first multi-byte character, or None."""
    for index, byte in enumerate(frame):
        if byte >= 0xC0:
            return index + 1
    return None


def _head(status: int, content_type: str, framing: str) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n{framing}\r\n"
        "connection: keep-alive\r\n\r\n"
    ).encode()


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """The next request on the connection (method, path, lower-cased headers, body), or None
    when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > _MAX_HEAD:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


def recording_proxy(
    target: str, *, pin: Mapping[str, Any] | None = None, split_utf8: bool = True
) -> RecordingProxy:
    """A :class:`RecordingProxy` to ``target``, running for the ``with`` block it is used in."""
    return RecordingProxy(target, pin=pin, split_utf8=split_utf8)
