"""The bench's upstream: a tiny OpenAI-compatible streaming server on raw asyncio + uvloop.

It is deliberately cheap (a timer per token, one ``transport.write`` per chunk) so that it never
limits a run. Every content token carries the time it was written and the time its request
arrived (``~<index>:<sent monotonic ns>:<request monotonic ns> ``), so a client can measure
the lag each hop adds against the same clock (CLOCK_MONOTONIC is system-wide on Linux).

The user message says what to stream: ``n=<tokens> tps=<tokens per second> ttft=<ms>``.
``GET /idle`` is an idle SSE stream with a ``: ping`` every ``ping`` seconds (the floor of the
idle-capacity scenario).

    python -m bench.upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import cast

import orjson
import uvloop

from bench.procs import raise_fd_limit

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
PREFIX = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"'
)
SUFFIX = b'"},"finish_reason":null}]}\n\n'
LAST = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"bench",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def parse_params(text: str) -> dict[str, float]:
    """``n=100 tps=50 ttft=0`` → a dict (unknown words are ignored)."""
    params = {"n": 100.0, "tps": 50.0, "ttft": 0.0}
    for word in text.split():
        key, _, value = word.partition("=")
        if key in params and value:
            params[key] = float(value)
    return params


class Stream:
    """One paced completion on one connection."""

    __slots__ = ("conn", "due", "handle", "index", "interval", "n", "req_ns")

    def __init__(self, conn: UpstreamProtocol, params: dict[str, float], req_ns: int) -> None:
        self.conn = conn
        self.n = int(params["n"])
        self.interval = 1.0 / params["tps"] if params["tps"] > 0 else 0.0
        self.index = 0
        self.req_ns = req_ns
        loop = asyncio.get_running_loop()
        self.due = loop.time() + params["ttft"] / 1000.0
        self.handle = loop.call_at(self.due, self.tick)

    def tick(self) -> None:
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            return
        if self.index >= self.n:
            transport.write(chunk(LAST) + b"0\r\n\r\n")
            self.conn.stream_done()
            return
        token = b"~%d:%d:%d " % (self.index, time.monotonic_ns(), self.req_ns)
        transport.write(chunk(PREFIX + token + SUFFIX))
        self.index += 1
        self.due += self.interval
        loop = asyncio.get_running_loop()
        self.handle = loop.call_at(self.due, self.tick)

    def cancel(self) -> None:
        self.handle.cancel()


class Idle:
    """All idle connections, pinged together every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.conns: set[UpstreamProtocol] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, conn: UpstreamProtocol) -> None:
        self.conns.add(conn)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self.ping)

    def ping(self) -> None:
        frame = chunk(b": ping\n\n")
        for conn in list(self.conns):
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(frame)
        self._handle = asyncio.get_running_loop().call_later(self.interval, self.ping)


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive connection: one request at a time (as httpx and the bench send)."""

    def __init__(self, idle: Idle) -> None:
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.stream: Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.cancel()
        self.idle.conns.discard(self)
        self.transport = None

    def stream_done(self) -> None:
        self.stream = None
        if self.buffer:
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.stream is not None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        req_ns = time.monotonic_ns()
        method, path, _ = head.split(" ", 2)
        assert self.transport is not None
        if method == "GET" and path.startswith("/idle"):
            self.transport.write(HEAD)
            self.idle.add(self)
            self.stream = None
            self.buffer = b""
            return
        if method == "POST" and path.endswith("/chat/completions"):
            request = orjson.loads(body)
            params = parse_params(str(request["messages"][-1]["content"]))
            self.transport.write(HEAD)
            self.stream = Stream(self, params, req_ns)
            return
        self.transport.write(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
            if method != "GET" or path != "/health"
            else b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        )


async def serve(port: int, ping: float) -> None:
    """Serve until cancelled."""
    idle = Idle(ping)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(idle), "127.0.0.1", port, backlog=16384
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ping", type=float, default=1.0)
    args = parser.parse_args()
    raise_fd_limit()
    try:
        uvloop.run(serve(args.port, args.ping))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
