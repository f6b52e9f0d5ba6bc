"""Upstream ingest cost: client CPU per streamed chunk for httpx, httpx2 and the gateway's wire.

Many concurrent paced streams (so every chunk is its own socket read, as in production) from
``bench.upstream``; each reader decodes SSE with the gateway's ``SSEDecoder``. Also measured:
the whole ``ChatClient.stream_chat``, over an injected httpx client (the path taken when a proxy
applies) and over its own raw HTTP/1.1 client (``gateway.upstream._wire``, the default).

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
from gateway.upstream import ChatClient, ContentDelta, SSEDecoder, UpstreamSettings
from gateway.upstream._http import Deadline
from gateway.upstream._wire import Target, WirePool


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


async def via_wire(pool: WirePool, url: str, q: str) -> int:
    target = Target.parse(url + "/chat/completions")
    headers = {"content-type": "application/json"}
    response = await pool.request(target, headers, _body(q), Deadline(600, "LLM"))
    decoder, n = SSEDecoder(), 0
    try:
        while data := await response.read():
            n += len(decoder.feed(data))
    finally:
        await response.aclose()
    return n


async def via_chat(chat: ChatClient, q: str) -> int:
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
        pool = WirePool(connect_timeout=5, idle_timeout=60, max_idle=streams)
        out.append(await measure("wire read", lambda: via_wire(pool, url, q), streams))
        pool.close()
        async with httpx.AsyncClient(limits=httpx.Limits(**limits)) as h1:
            chat = ChatClient(settings, http=h1)
            out.append(await measure("ChatClient (httpx)", lambda: via_chat(chat, q), streams))
        async with ChatClient(settings) as chat:
            out.append(await measure("ChatClient (wire)", lambda: via_chat(chat, q), streams))
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
