"""The load client: raw asyncio (uvloop) HTTP/1.1 SSE readers, cheap enough never to limit a run.

One ``asyncio.Protocol`` per connection: it de-chunks the body, splits frames, and checks as it
goes that SSE ids and token indexes (``~<index>:<sent ns>:<request ns>`` in the payload, see
``bench.upstream``) advance by exactly one — counting gaps and duplicates — and records the lag
of every token against the upstream's own send time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import cast

import orjson


@dataclass
class Request:
    """What to send: a raw HTTP/1.1 request."""

    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, port: int) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.method == "POST":
            lines.append(f"content-length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def post_json(path: str, obj: object, **headers: str) -> Request:
    return Request("POST", path, orjson.dumps(obj), {"content-type": "application/json", **headers})


@dataclass
class Progress:
    """Where a reader is in a stream; carried over a reconnect."""

    last_id: int = 0  # last SSE id seen (the resume cursor)
    next_token: int = 0  # index of the next token expected
    id_gaps: int = 0
    id_dups: int = 0
    token_gaps: int = 0
    token_dups: int = 0
    tokens: int = 0
    events: int = 0  # frames with data

    @property
    def gaps(self) -> int:
        return self.id_gaps + self.token_gaps

    @property
    def dups(self) -> int:
        return self.id_dups + self.token_dups


class SSEReader(asyncio.Protocol):
    """One SSE response. ``done`` resolves when it ends, fails, or is dropped."""

    def __init__(
        self,
        marker: bytes,
        progress: Progress | None = None,
        *,
        drop_at_token: int | None = None,
        record_lags: bool = True,
        crlf: bool = False,
    ) -> None:
        self.marker = marker
        self.progress = progress or Progress()
        self.drop_at_token = drop_at_token
        self.record_lags = record_lags
        self.sep = b"\r\n\r\n" if crlf else b"\n\n"
        self.nl = b"\r\n" if crlf else b"\n"
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_event = asyncio.Event()  # set at the first data frame or at the end
        self.answered = asyncio.Event()  # set once the response head arrived (or at the end)
        self.head_ns = 0  # when the response head arrived
        self.status = 0
        self.headers: dict[str, str] = {}
        self.started_ns = time.monotonic_ns()
        self.first_event_ns = 0
        self.first_token_ns = 0
        self.first_token_upstream_ns = 0  # upstream's own time from request to first token
        self.lags: list[int] = []
        self.pings: list[int] = []
        self.finished = False
        self.dropped = False
        self.done_ns = 0
        self.key = ""  # the stream (task) id this reader follows, once known
        self._head = b""
        self._raw = bytearray()  # chunked body not yet decoded
        self._sse = b""  # decoded body not yet split into frames
        self._in_body = False
        self._chunk_left = 0

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done_ns = time.monotonic_ns()
            self.done.set_result(None)
            self.first_event.set()
            self.answered.set()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(self._head[:end])
            self.head_ns = now
            self.answered.set()
            self.key = self.key or self.headers.get("x-task-id", "")
            data, self._head = self._head[end + 4 :], b""
            self._in_body = True
            if self.status != 200:
                self._close()
                return
        self._raw += data
        self._dechunk(now)

    # -- parsing --------------------------------------------------------------------------
    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _dechunk(self, now: int) -> None:
        raw = self._raw
        pos = 0
        out = []
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(raw) - pos)
                if take <= 0:
                    break
                out.append(bytes(raw[pos : pos + take]))
                pos += take
                self._chunk_left -= take
                if self._chunk_left:
                    break
                pos += 2  # the CRLF after the chunk (may still be missing: handled below)
                continue
            end = raw.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(raw[pos:end], 16) if end > pos else -1
            if size == -1:  # a CRLF left over from the previous chunk
                pos = end + 2
                continue
            if size == 0:
                self._feed(b"".join(out), now)
                self._finish_body()
                return
            self._chunk_left = size
            pos = end + 2
        del raw[: min(pos, len(raw))]
        if out:
            self._feed(b"".join(out), now)

    def _feed(self, data: bytes, now: int) -> None:
        buffer = self._sse + data if self._sse else data
        frames = buffer.split(self.sep)
        self._sse = frames.pop()
        for frame in frames:
            self._frame(frame, now)
            if self.transport is None:
                return

    def _frame(self, frame: bytes, now: int) -> None:
        if frame.startswith(b":"):
            self.pings.append(now)
            return
        sse_id = -1
        data = b""
        for line in frame.split(self.nl):
            if line.startswith(b"data:"):
                data = line[6:] if line[5:6] == b" " else line[5:]
            elif line.startswith(b"id:"):
                sse_id = int(line[3:])
        if not data:
            return
        p = self.progress
        p.events += 1
        if not self.first_event_ns:
            self.first_event_ns = now
            self.first_event.set()
        if sse_id >= 0:
            if sse_id <= p.last_id:
                p.id_dups += 1
                return
            if sse_id > p.last_id + 1:
                p.id_gaps += 1
            p.last_id = sse_id
        pos = data.find(self.marker)
        if pos >= 0:
            start = pos + len(self.marker)
            value = data[start : data.index(b'"', start)]
            if value.count(b"~") == 1:
                index_s, sent_s, req_s = value[1:].split(b":")
                index = int(index_s)
                sent = int(sent_s)
                if index < p.next_token:
                    # Not a duplicate: the final full text of a one-token answer (the gateway's
                    # closing ``agent_stream`` frame) is that token again.
                    if b'"isFinal":true' not in data:
                        p.token_dups += 1
                else:
                    if index > p.next_token:
                        p.token_gaps += 1
                    p.next_token = index + 1
                    p.tokens += 1
                    if not self.first_token_ns:
                        self.first_token_ns = now
                        self.first_token_upstream_ns = sent - int(req_s)
                    if self.record_lags:
                        self.lags.append(now - sent)
                    if self.drop_at_token is not None and index >= self.drop_at_token:
                        self.dropped = True
                        self._close()
                        return
        if data == b"[DONE]" or b'"finish":true' in data:
            self.finished = True

    def _finish_body(self) -> None:
        self._close()

    def _close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
        if not self.done.done():
            self.done_ns = time.monotonic_ns()
            self.done.set_result(None)
            self.first_event.set()
            self.answered.set()

    def added_ttft_ns(self) -> int | None:
        """Client-side time to first token minus the upstream's own share of it."""
        if not self.first_token_ns:
            return None
        return self.first_token_ns - self.started_ns - self.first_token_upstream_ns


async def open_stream(
    port: int, request: Request, reader: SSEReader, *, retries: int = 20
) -> SSEReader:
    """Connect ``reader`` to 127.0.0.1:``port`` and send ``request`` (returns at once)."""
    loop = asyncio.get_running_loop()
    reader.started_ns = time.monotonic_ns()
    for attempt in range(retries):
        try:
            transport, _ = await loop.create_connection(lambda: reader, "127.0.0.1", port)
            break
        except OSError:
            if attempt == retries - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    reader.transport = transport
    transport.write(request.encode(port))
    return reader


async def simple_request(port: int, request: Request) -> tuple[int, bytes]:
    """A plain non-streaming request (no keep-alive); returns status and body."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        request.headers.setdefault("connection", "close")
        w.write(request.encode(port))
        raw = await r.read()
    finally:
        w.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out, pos = [], 0
        while True:
            end = body.find(b"\r\n", pos)
            size = int(body[pos:end], 16)
            if size == 0:
                break
            out.append(body[end + 2 : end + 2 + size])
            pos = end + 2 + size + 2
        body = b"".join(out)
    return status, body
