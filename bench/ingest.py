"""Upstream ingest cost: client CPU per streamed chunk for httpx, httpx2 and a raw reader.

Many concurrent paced streams (so every chunk is its own socket read, as in production) from
``bench.upstream``; each reader decodes SSE with the gateway's ``SSEDecoder``. Also measured:
the whole ``ChatClient.stream_chat`` (httpx) and ``bench.rawchat.RawChatClient.stream_chat``.

    python -m bench.ingest [--streams 200] [--tokens 300] [--tps 100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import httpx
import httpx2
import orjson
import uvloop

from bench.procs import raise_fd_limit, self_cpu_seconds, start_python, wait_port
from bench.rawchat import RawChatClient, _Conn
from gateway.upstream import ChatClient, ContentDelta, SSEDecoder, UpstreamSettings


def _body(q: str) -> bytes:
    return orjson.dumps(
        {"model": "bench", "stream": True, "messages": [{"role": "user", "content": q}]}
    )


async def via_httpx(client: Any, url: str, q: str) -> int:
    decoder, n = SSEDecoder(), 0
    async with client.stream("POST", url + "/chat/completions", content=_body(q)) as response:
        async for chunk in response.aiter_bytes():
            n += len(decoder.feed(chunk))
    return n


async def via_raw(port: int, q: str) -> int:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _Conn(60.0), "127.0.0.1", port)
    body = _body(q)
    conn.start(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    decoder, n = SSEDecoder(), 0
    while True:
        data = await conn.read()
        n += len(decoder.feed(data))
        if conn.ended:
            break
    conn.stop_timer()
    if conn.transport is not None:
        conn.transport.close()
    return n


async def via_chat(chat: ChatClient | RawChatClient, q: str) -> int:
    n = 0
    async with aclosing(chat.stream_chat([{"role": "user", "content": q}])) as events:
        async for event in events:
            n += type(event) is ContentDelta
    return n


async def measure(name: str, one: Callable[[], Awaitable[int]], streams: int) -> dict[str, Any]:
    cpu0 = self_cpu_seconds()
    counts = await asyncio.gather(*(one() for _ in range(streams)))
    cpu = self_cpu_seconds() - cpu0
    events = sum(counts)
    return {"reader": name, "events": events, "cpu_us_per_event": round(cpu * 1e6 / events, 1)}


async def main_async(streams: int, tokens: int, tps: float) -> list[dict[str, Any]]:
    raise_fd_limit()
    upstream = start_python("upstream", "bench.upstream", [])
    try:
        wait_port(upstream.port, upstream.proc)
        url = f"{upstream.url}/v1"
        q = f"n={tokens} tps={tps:g} ttft=0"
        limits = dict(max_connections=streams * 2, max_keepalive_connections=streams * 2)
        settings = dataclasses.replace(UpstreamSettings(), llm_base_url=url)
        out = []
        async with httpx.AsyncClient(limits=httpx.Limits(**limits)) as h1:
            out.append(await measure("httpx aiter_bytes", lambda: via_httpx(h1, url, q), streams))
        async with httpx2.AsyncClient(limits=httpx2.Limits(**limits)) as h2:
            out.append(await measure("httpx2 aiter_bytes", lambda: via_httpx(h2, url, q), streams))
        out.append(await measure("raw asyncio", lambda: via_raw(upstream.port, q), streams))
        async with httpx.AsyncClient(limits=httpx.Limits(**limits)) as h1:
            chat = ChatClient(settings, http=h1)
            out.append(await measure("ChatClient (httpx)", lambda: via_chat(chat, q), streams))
        raw = RawChatClient(settings)
        out.append(await measure("RawChatClient", lambda: via_chat(raw, q), streams))
        await raw.aclose()
        return out
    finally:
        upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--tps", type=float, default=100.0)
    args = parser.parse_args()
    for row in uvloop.run(main_async(args.streams, args.tokens, args.tps)):
        print(
            f"{row['reader']:<22} {row['events']:>8} events  {row['cpu_us_per_event']:>7} µs/event"
        )


if __name__ == "__main__":
    main()
