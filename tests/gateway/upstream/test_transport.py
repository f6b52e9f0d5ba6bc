"""ChatClient's transport (aiohttp) against raw asyncio servers and a proxy on 127.0.0.1.

Each server counts its connections and requests and reports every closed connection, so reuse,
retries and closes are asserted from the server's side.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson
import pytest

from gateway.upstream import (
    ChatClient,
    ChatResult,
    ContentDelta,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamSettings,
    UpstreamTimeout,
)
from tests.helpers import self_signed_certificate

pytestmark = pytest.mark.anyio

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


def settings(server: Server, scheme: str = "http", **overrides: Any) -> UpstreamSettings:
    base = UpstreamSettings(
        llm_base_url=f"{scheme}://127.0.0.1:{server.port}/v1",
        llm_retry_backoff=0.01,
        llm_idle_timeout=5,
        llm_total_timeout=20,
    )
    return replace(base, **overrides)


async def collect(chat: ChatClient) -> list[Any]:
    with anyio.fail_after(15):
        async with aclosing(chat.stream_chat([{"role": "user", "content": "hi"}])) as events:
            return [event async for event in events]


HELLO = [ContentDelta("Hel"), ContentDelta("lo"), ChatResult("Hello", (), "stop")]


# -- bodies and keep-alive ---------------------------------------------------------------------


async def test_a_body_split_anywhere_even_inside_a_character_gives_the_same_events() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        wire = SSE_HEAD + chunked(
            delta("caf\u00e9 "), delta("\u65e5\u672c"), STOP, b"data: [DONE]\n\n"
        )
        for i in range(0, len(wire), 7):  # a new segment every 7 bytes, mid-line and mid-size
            writer.write(wire[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        return True

    async with raw_server(handle) as server:
        async with ChatClient(settings(server)) as chat:
            events = await collect(chat)
            texts: list[str] = []
            with anyio.fail_after(5):
                result = await chat.stream_text([{"role": "user", "content": "hi"}], texts.append)
    assert (
        "".join(e.text for e in events if isinstance(e, ContentDelta)) == "caf\u00e9 \u65e5\u672c"
    )
    assert result == events[-1] and "".join(texts) == result.content
    assert (server.connections, server.requests) == (1, 2)


async def test_a_streamed_chat_reuses_one_connection() -> None:
    async with raw_server(answer(SSE_ANSWER)) as server:
        async with ChatClient(settings(server)) as chat:
            first, second = await collect(chat), await collect(chat)
    assert first == second == HELLO
    assert (server.connections, server.requests) == (1, 2)


async def test_a_completion_sent_whole_is_one_piece_of_text() -> None:
    completion = orjson.dumps(
        {"choices": [{"index": 0, "message": {"content": "all at once"}, "finish_reason": "stop"}]}
    )
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    async with raw_server(answer(head % len(completion) + completion)) as server:
        async with ChatClient(settings(server)) as chat:
            texts: list[str] = []
            with anyio.fail_after(5):
                result = await chat.stream_text([{"role": "user", "content": "hi"}], texts.append)
    assert texts == ["all at once"] and result == ChatResult("all at once", (), "stop")


# -- connections closed by the server ------------------------------------------------------------


async def test_a_pooled_connection_the_server_closed_is_replaced() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_ANSWER)
        return False  # says keep-alive, closes anyway: the idle connection dies in the pool

    async with raw_server(handle) as server:
        async with ChatClient(settings(server, llm_max_retries=0)) as chat:
            assert await collect(chat) == HELLO
            assert await server.next_close() == 1
            assert await collect(chat) == HELLO
    assert (server.connections, server.requests) == (2, 2)


async def test_a_request_on_a_connection_closed_unanswered_is_retried() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            return False  # the keep-alive race: closed as the request arrived, no answer
        writer.write(SSE_ANSWER)
        return True

    async with raw_server(handle) as server:
        async with ChatClient(settings(server)) as chat:
            assert await collect(chat) == HELLO
            assert await collect(chat) == HELLO
    assert (server.connections, server.requests) == (2, 3)


async def test_a_response_cut_mid_body_raises_a_protocol_error() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD + chunked(delta("Hel"))[:-5] + b"40\r\ndata: {")
        return False

    async with raw_server(handle) as server:
        async with ChatClient(settings(server)) as chat:
            with pytest.raises(UpstreamProtocolError, match="connection broke"):
                await collect(chat)
    assert server.requests == 1  # text was not yet yielded, but a cut is not retried


# -- time limits ---------------------------------------------------------------------------------


async def test_a_silent_server_hits_the_idle_limit_before_and_after_the_headers() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            writer.write(SSE_HEAD + chunked(delta("a"))[:-5])  # one chunk, no end
        return await until_disconnect(reader)

    async with raw_server(handle) as server:
        quick = settings(server, llm_idle_timeout=0.3, llm_max_retries=0)
        async with ChatClient(quick) as chat:
            with pytest.raises(UpstreamTimeout) as waiting:
                await collect(chat)
            assert await server.next_close() == 1
            got: list[Any] = []
            with pytest.raises(UpstreamTimeout) as streaming, anyio.fail_after(5):
                async with aclosing(chat.stream_chat([{"role": "user", "content": "hi"}])) as s:
                    async for event in s:
                        got.append(event)
                        started = time.monotonic()
            assert 0.25 <= time.monotonic() - started < 3
            assert got == [ContentDelta("a")]
            assert await server.next_close() == 2
    assert waiting.value.phase == streaming.value.phase == "idle"


async def test_a_steady_stream_hits_the_total_limit() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD)
        with anyio.move_on_after(10):
            while True:  # a chunk every 50 ms, forever: never idle
                writer.write(chunked(b": tick\n\n")[:-5])
                await writer.drain()
                await anyio.sleep(0.05)
        return False

    async with raw_server(handle) as server:
        async with ChatClient(settings(server, llm_total_timeout=0.5)) as chat:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout) as caught:
                await collect(chat)
            assert await server.next_close() == 1
    assert caught.value.phase == "total"
    assert 0.45 <= time.monotonic() - started < 3


# -- error statuses and retries ------------------------------------------------------------------


async def test_a_client_error_carries_the_upstream_message_and_is_not_retried() -> None:
    error = orjson.dumps({"error": {"message": "model 'x' does not exist", "type": "invalid"}})
    reply = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
    reply += b"content-length: %d\r\n\r\n%s" % (len(error), error)
    async with raw_server(answer(reply)) as server:
        async with ChatClient(settings(server)) as chat:
            with pytest.raises(UpstreamHTTPError) as caught:
                await collect(chat)
    assert caught.value.status_code == 404
    assert caught.value.message == "LLM: HTTP 404: model 'x' does not exist"
    assert server.requests == 1


@pytest.mark.parametrize("status", [b"429 Too Many Requests", b"503 Service Unavailable"])
async def test_a_retry_after_status_is_retried_after_the_time_it_asks(status: bytes) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            writer.write(b"HTTP/1.1 %s\r\nretry-after: 0.4\r\ncontent-length: 0\r\n\r\n" % status)
        else:
            writer.write(SSE_ANSWER)
        return True

    async with raw_server(handle) as server:
        async with ChatClient(settings(server)) as chat:
            started = time.monotonic()
            events = await collect(chat)
            elapsed = time.monotonic() - started
    assert events[-1] == ChatResult("Hello", (), "stop")
    assert elapsed >= 0.4  # the back-off alone would be ~10 ms
    assert (server.connections, server.requests) == (1, 2)


# -- leaving early ------------------------------------------------------------------------------


async def test_leaving_a_stream_early_closes_its_connection() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            writer.write(SSE_HEAD + chunked(delta("first"))[:-5])
            return await until_disconnect(reader)
        writer.write(SSE_ANSWER)
        return True

    async with raw_server(handle) as server:
        async with ChatClient(settings(server)) as chat:
            with anyio.fail_after(5):
                async with aclosing(chat.stream_chat([{"role": "user", "content": "hi"}])) as s:
                    assert await anext(s) == ContentDelta("first")
            assert await server.next_close() == 1  # closed, not kept half-read
            assert (await collect(chat))[-1] == ChatResult("Hello", (), "stop")
    assert (server.connections, server.requests) == (2, 2)


async def test_a_cancelled_reader_closes_its_connection() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD + chunked(delta("first"))[:-5])
        return await until_disconnect(reader)

    async with raw_server(handle) as server:
        async with ChatClient(settings(server)) as chat:
            got: list[str] = []
            with anyio.move_on_after(0.3) as scope:
                await chat.stream_text([{"role": "user", "content": "hi"}], got.append)
            assert scope.cancelled_caught and got == ["first"]
            assert await server.next_close() == 1


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


async def test_https_works_with_the_ca_file_and_fails_without_it(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with raw_server(answer(SSE_ANSWER), server_context) as server:
        trusting = settings(server, "https", llm_ca_file=str(cert))
        async with ChatClient(trusting) as chat:
            first, second = await collect(chat), await collect(chat)
        assert first == second and first[-1] == ChatResult("Hello", (), "stop")
        assert (server.connections, server.requests) == (1, 2)
        async with ChatClient(settings(server, "https", llm_max_retries=0)) as chat:
            with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await collect(chat)


async def test_invalid_utf8_in_a_chunk_is_replaced_as_in_decoded_text() -> None:
    bad = b'data: {"choices": [{"index": 0, "delta": {"content": "a\xffb"}}]}\n\n'
    wire = SSE_HEAD + chunked(delta("ok"), bad, STOP, b"data: [DONE]\n\n")
    async with raw_server(answer(wire)) as server:
        async with ChatClient(settings(server)) as chat:
            texts: list[str] = []
            with anyio.fail_after(5):
                result = await chat.stream_text([{"role": "user", "content": "hi"}], texts.append)
            events = await collect(chat)
    assert texts == ["ok", "a\ufffdb"] and result.content == "oka\ufffdb"
    assert events[-1] == result


async def test_https_trusts_the_ca_file_named_by_ssl_cert_file(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with raw_server(answer(SSE_ANSWER), server_context) as server:
        async with ChatClient(settings(server, "https")) as chat:
            assert await collect(chat) == HELLO


# -- proxies from the environment ----------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    requests: list[bytes] = field(default_factory=list)  # the request lines it was sent


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@asynccontextmanager
async def proxy_server() -> AsyncIterator[Proxy]:
    """A forward proxy: ``CONNECT host:port`` tunnels, an absolute-form request is passed on."""
    tasks: set[asyncio.Task[Any]] = set()
    proxy = Proxy("")

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            proxy.requests.append(line)
            method, target, _ = line.split(b" ")
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urlsplit(target.decode())
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
                up_writer.write(head.replace(target, url.path.encode(), 1))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        with anyio.fail_after(5):
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


async def test_http_proxy_carries_the_stream_unless_no_proxy_names_the_host(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    async with raw_server(answer(SSE_ANSWER)) as server, proxy_server() as proxy:
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)
        async with ChatClient(settings(server)) as chat:
            assert await collect(chat) == HELLO
        assert proxy.requests == [
            f"POST http://127.0.0.1:{server.port}/v1/chat/completions HTTP/1.1".encode()
        ]
        no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
        async with ChatClient(settings(server)) as chat:
            assert await collect(chat) == HELLO
        assert len(proxy.requests) == 1 and server.requests == 2


async def test_https_goes_through_the_proxy_by_connect_and_is_verified_end_to_end(
    certificate: tuple[Path, Path], no_proxy_env: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with raw_server(answer(SSE_ANSWER), server_context) as server, proxy_server() as proxy:
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        async with ChatClient(settings(server, "https", llm_ca_file=str(cert))) as chat:
            assert await collect(chat) == HELLO
            assert await collect(chat) == HELLO
        assert proxy.requests == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1".encode()]
        async with ChatClient(settings(server, "https", llm_max_retries=0)) as chat:
            with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await collect(chat)
