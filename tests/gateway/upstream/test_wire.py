"""The raw HTTP/1.1 client (``gateway.upstream._wire``) against raw asyncio servers on 127.0.0.1.

Each server counts its connections and requests and reports every closed connection, so reuse,
retries and closes are asserted from the server's side.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path
from typing import Any

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
from gateway.upstream._http import Deadline
from gateway.upstream._wire import HIGH_WATER, Target, WirePool, WireResponse
from tests.gateway.upstream.raw_servers import (
    SSE_ANSWER,
    SSE_HEAD,
    STOP,
    Server,
    answer,
    chunked,
    delta,
    raw_server,
    until_disconnect,
)
from tests.helpers import free_port, self_signed_certificate

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool() -> AsyncIterator[WirePool]:
    opened = WirePool(connect_timeout=5, idle_timeout=5)
    yield opened
    opened.close()
    await asyncio.sleep(0)  # let the aborted transports run connection_lost


def target(server: Server, scheme: str = "http") -> Target:
    return Target.parse(f"{scheme}://127.0.0.1:{server.port}/v1/chat/completions")


async def fetch(pool: WirePool, server: Server, seconds: float = 10) -> tuple[int, bytes]:
    response = await pool.request(target(server), {}, b"{}", Deadline(seconds, "LLM"))
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


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


# -- bodies and keep-alive ---------------------------------------------------------------------


async def test_a_chunked_body_split_anywhere_is_dechunked(pool: WirePool) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        wire = SSE_HEAD + chunked(b"first ", b"second ", b"third")
        for i in range(0, len(wire), 7):  # a new segment every 7 bytes, mid-line and mid-size
            writer.write(wire[i : i + 7])
            await writer.drain()
        return True

    async with raw_server(handle) as server:
        assert await fetch(pool, server) == (200, b"first second third")


async def test_a_content_length_body_reuses_the_connection_after_an_early_hint(
    pool: WirePool,
) -> None:
    hint = b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
    reply = hint + b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
    async with raw_server(answer(reply)) as server:
        assert await fetch(pool, server) == (200, b"hello")
        assert await fetch(pool, server) == (200, b"hello")
        assert (server.connections, server.requests) == (1, 2)


async def test_a_body_delimited_by_the_close_ends_there_and_is_not_pooled(pool: WirePool) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"the close")
        return False

    async with raw_server(handle) as server:
        assert await fetch(pool, server) == (200, b"until the close")
        assert await fetch(pool, server) == (200, b"until the close")
        assert (server.connections, server.requests) == (2, 2)


async def test_a_streamed_chat_reuses_one_connection(pool: WirePool) -> None:
    async with raw_server(answer(SSE_ANSWER)) as server:
        async with ChatClient(settings(server)) as chat:
            first, second = await collect(chat), await collect(chat)
    assert (
        first
        == second
        == [ContentDelta("Hel"), ContentDelta("lo"), ChatResult("Hello", (), "stop")]
    )
    assert (server.connections, server.requests) == (1, 2)


async def test_a_large_body_pauses_reading_until_it_is_read(pool: WirePool) -> None:
    body = bytes(range(256)) * (4 * HIGH_WATER // 256)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
    async with raw_server(answer(head + body)) as server:
        response = await pool.request(target(server), {}, b"{}", Deadline(10, "LLM"))
        try:
            with anyio.fail_after(5):
                while not response._conn._paused:  # the client stops reading at the high water
                    await anyio.sleep(0.005)
            assert await response.aread() == body
        finally:
            await response.aclose()
        assert await fetch(pool, server) == (200, body)
        assert server.connections == 1


async def test_a_piped_body_reaches_the_sink_in_order_and_the_connection_is_reused(
    pool: WirePool,
) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        wire = SSE_HEAD + chunked(b"first ", b"second ", b"third")
        for i in range(0, len(wire), 7):  # a new segment every 7 bytes, mid-line and mid-size
            writer.write(wire[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        return True

    got: list[bytes] = []

    def sink(data: bytes) -> bool:
        got.append(data)
        return False

    async with raw_server(handle) as server:
        response = await pool.request(target(server), {}, b"{}", Deadline(10, "LLM"))
        try:
            with anyio.fail_after(5):
                await response.pipe(sink)
        finally:
            await response.aclose()
        assert b"".join(got) == b"first second third" and len(got) > 1
        assert await fetch(pool, server) == (200, b"first second third")
        assert (server.connections, server.requests) == (1, 2)


async def test_a_sink_that_has_enough_ends_the_pipe_and_the_rest_is_drained(
    pool: WirePool,
) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD + chunked(b"one ")[:-5])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"6\r\nenough\r\n" + chunked(b"rest"))
        return True

    got: list[bytes] = []

    def sink(data: bytes) -> bool:
        got.append(data)
        return b"enough" in data

    async with raw_server(handle) as server:
        response = await pool.request(target(server), {}, b"{}", Deadline(10, "LLM"))
        try:
            with anyio.fail_after(5):
                await response.pipe(sink)
                assert b"".join(got) == b"one enough"
                await response.finish()
        finally:
            await response.aclose()
        assert b"rest" not in b"".join(got)
        assert await fetch(pool, server) == (200, b"one enoughrest")
        assert server.connections == 1  # drained to its end, the connection went back


async def test_what_a_sink_raises_comes_out_of_pipe_and_closes_the_connection(
    pool: WirePool,
) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD + chunked(b"bad")[:-5])
        return await until_disconnect(reader)

    def sink(data: bytes) -> bool:
        raise ValueError(data)

    async with raw_server(handle) as server:
        response = await pool.request(target(server), {}, b"{}", Deadline(10, "LLM"))
        try:
            with pytest.raises(ValueError, match="bad"), anyio.fail_after(5):
                await response.pipe(sink)
        finally:
            await response.aclose()
        assert await server.next_close() == 1


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


async def test_a_pooled_connection_the_server_closed_is_replaced(pool: WirePool) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return False  # says keep-alive, closes anyway: the idle connection dies in the pool

    async with raw_server(handle) as server:
        assert await fetch(pool, server) == (200, b"ok")
        assert await server.next_close() == 1
        assert await fetch(pool, server) == (200, b"ok")
        assert (server.connections, server.requests) == (2, 2)


async def test_a_request_on_a_connection_closed_unanswered_is_retried_once_fresh(
    pool: WirePool,
) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            return False  # the keep-alive race: closed as the request arrived, no answer
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return True

    async with raw_server(handle) as server:
        assert await fetch(pool, server) == (200, b"ok")
        assert await fetch(pool, server) == (200, b"ok")
        assert (server.connections, server.requests) == (2, 3)


async def test_a_fresh_connection_closed_unanswered_raises_without_a_retry(
    pool: WirePool,
) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return False

    async with raw_server(handle) as server:
        with pytest.raises(UpstreamProtocolError, match="without answering"):
            await fetch(pool, server)
        assert (server.connections, server.requests) == (1, 1)


async def test_a_response_cut_mid_body_raises_a_protocol_error(pool: WirePool) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        return False

    async with raw_server(handle) as server:
        with pytest.raises(UpstreamProtocolError, match="closed mid-response"):
            await fetch(pool, server)


async def test_a_malformed_response_raises_a_protocol_error(pool: WirePool) -> None:
    async with raw_server(answer(b"HTTP/1.1 2x0 OK\r\n\r\n")) as server:
        with pytest.raises(UpstreamProtocolError, match="bad HTTP response"):
            await fetch(pool, server)


async def test_bytes_after_a_response_keep_its_connection_out_of_the_pool(pool: WirePool) -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"
    async with raw_server(answer(reply)) as server:
        assert await fetch(pool, server) == (200, b"ok")
        assert await fetch(pool, server) == (200, b"ok")
        assert (server.connections, server.requests) == (2, 2)


async def test_an_unreachable_server_raises_a_connect_error(pool: WirePool) -> None:
    url = Target.parse(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UpstreamConnectError):
        await pool.request(url, {}, b"", Deadline(5, "LLM"))


# -- time limits ---------------------------------------------------------------------------------


async def test_a_silent_server_hits_the_idle_limit_before_and_after_the_headers() -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            writer.write(SSE_HEAD + chunked(delta("a"))[:-5])  # one chunk, no end
        return await until_disconnect(reader)

    idle = WirePool(connect_timeout=5, idle_timeout=0.3)
    try:
        async with raw_server(handle) as server:
            with pytest.raises(UpstreamTimeout) as waiting:
                await fetch(idle, server)
            assert await server.next_close() == 1
            response = await idle.request(target(server), {}, b"{}", Deadline(10, "LLM"))
            try:
                assert await response.read() == delta("a")
                started = time.monotonic()
                with pytest.raises(UpstreamTimeout) as streaming:
                    await response.read()
                assert 0.25 <= time.monotonic() - started < 3
            finally:
                await response.aclose()
            assert await server.next_close() == 2
    finally:
        idle.close()
    assert waiting.value.phase == streaming.value.phase == "idle"


async def test_a_steady_stream_hits_the_total_limit(pool: WirePool) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD)
        with anyio.move_on_after(10):
            while True:  # a chunk every 50 ms, forever: never idle
                writer.write(chunked(b": tick\n\n")[:-5])
                await writer.drain()
                await anyio.sleep(0.05)
        return False

    async with raw_server(handle) as server:
        started = time.monotonic()
        response = await pool.request(target(server), {}, b"{}", Deadline(0.5, "LLM"))
        try:
            with pytest.raises(UpstreamTimeout) as caught:
                while await response.read():
                    pass
        finally:
            await response.aclose()
        assert await server.next_close() == 1
    assert caught.value.phase == "total"
    assert 0.45 <= time.monotonic() - started < 3


# -- error statuses and retries (through ChatClient) --------------------------------------------


async def test_a_client_error_carries_the_upstream_message_and_is_not_retried() -> None:
    error = orjson.dumps({"error": {"message": "model 'x' does not exist", "type": "invalid"}})
    reply = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
    reply += b"content-length: %d\r\n\r\n%s" % (len(error), error)
    async with raw_server(answer(reply)) as server:
        async with ChatClient(settings(server)) as chat:
            with pytest.raises(UpstreamHTTPError) as caught:
                await collect(chat)
    assert caught.value.upstream_status == 404
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


# -- leaving early -------------------------------------------------------------------------------


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


async def test_a_cancelled_reader_closes_its_connection(pool: WirePool) -> None:
    async def handle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD)
        return await until_disconnect(reader)

    async with raw_server(handle) as server:
        response: WireResponse | None = None
        with anyio.move_on_after(0.2) as scope:
            response = await pool.request(target(server), {}, b"{}", Deadline(10, "LLM"))
            try:
                await response.read()
            finally:
                await response.aclose()
        assert scope.cancelled_caught
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
