"""Raw HTTP/1.1 servers on 127.0.0.1 for the upstream client's tests.

Each server counts its connections and requests and reports every closed connection, so reuse,
retries and closes are asserted from the server's side.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

__all__ = [
    "SSE_ANSWER",
    "SSE_HEAD",
    "STOP",
    "Handler",
    "Server",
    "answer",
    "chunked",
    "delta",
    "raw_server",
    "until_disconnect",
]

Handler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers request ``n`` (1-based, over all connections); True keeps the connection open."""

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: int = 0
    closed: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    async def next_close(self) -> int:
        """Wait (bounded) until a connection has closed; returns its number."""
        with anyio.fail_after(5):
            return await self.closed.get()


@asynccontextmanager
async def raw_server(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """An HTTP/1.1 server whose answers are written by ``handler``; every task ends with it."""
    state = Server(port=0)
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        state.connections += 1
        number = state.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                state.requests += 1
                if not await handler(state.requests, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()
            state.closed.put_nowait(number)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        with anyio.fail_after(5):
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()


async def until_disconnect(reader: asyncio.StreamReader) -> bool:
    """Hold the connection until the client closes it (at most 10 s); never keep it."""
    with anyio.move_on_after(10):
        while await reader.read(65536):
            pass
    return False


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def delta(text: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


STOP = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
SSE_ANSWER = SSE_HEAD + chunked(delta("Hel"), delta("lo"), STOP, b"data: [DONE]\n\n")


def answer(data: bytes) -> Handler:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return True

    return handle
