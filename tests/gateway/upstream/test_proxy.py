"""ChatClient through a forward proxy from the environment, and TLS trust from SSL_CERT_FILE.

A raw asyncio server and a forward proxy (``CONNECT`` tunnels and absolute-form requests) on
127.0.0.1: whichever transport carries the stream, these are what a deployment relies on.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from gateway.upstream import (
    ChatClient,
    ChatResult,
    ContentDelta,
    UpstreamConnectError,
    UpstreamSettings,
)
from tests.gateway.upstream.raw_servers import (
    SSE_ANSWER,
    Server,
    answer,
    raw_server,
)
from tests.helpers import self_signed_certificate

pytestmark = pytest.mark.anyio


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


# -- TLS and proxies ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


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
    heads: list[bytes] = field(default_factory=list)  # the whole heads
    refuse: bool = False  # answer CONNECT with 403


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
            proxy.heads.append(head)
            method, target, _ = line.split(b" ")
            if method == b"CONNECT" and proxy.refuse:
                writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                return
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
        assert set(proxy.requests) == {f"CONNECT 127.0.0.1:{server.port} HTTP/1.1".encode()}
        async with ChatClient(settings(server, "https", llm_max_retries=0)) as chat:
            with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await collect(chat)


async def test_the_proxy_urls_user_and_password_authenticate_each_way_through_it(
    certificate: tuple[Path, Path], no_proxy_env: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    basic = re.compile(rb"(?im)^proxy-authorization: Basic YWxpY2U6cGEgc3M=\r$")  # alice:pa ss
    async with raw_server(answer(SSE_ANSWER)) as plain, proxy_server() as proxy:
        no_proxy_env.setenv("HTTP_PROXY", proxy.url.replace("//", "//alice:pa%20ss@"))
        async with ChatClient(settings(plain)) as chat:
            assert await collect(chat) == HELLO
    async with raw_server(answer(SSE_ANSWER), server_context) as tls, proxy_server() as tunnel:
        no_proxy_env.setenv("HTTPS_PROXY", tunnel.url.replace("//", "//alice:pa%20ss@"))
        async with ChatClient(settings(tls, "https", llm_ca_file=str(cert))) as chat:
            assert await collect(chat) == HELLO
    assert basic.search(proxy.heads[0]) and basic.search(tunnel.heads[0])


async def test_a_proxy_that_refuses_the_tunnel_is_a_connect_error(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    async with raw_server(answer(SSE_ANSWER)) as server, proxy_server() as proxy:
        proxy.refuse = True
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        async with ChatClient(settings(server, "https", llm_max_retries=0)) as chat:
            with pytest.raises(UpstreamConnectError, match="403"):
                await collect(chat)
    assert server.connections == 0
