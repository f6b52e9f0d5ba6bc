"""Upstream ingest cost: client CPU per streamed chunk for httpx, httpx2, aiohttp and the wire.

Many concurrent paced streams (so every chunk is its own socket read, as in production) from
``bench.upstream``; each reader decodes SSE with the gateway's ``SSEDecoder``. Also measured:
the gateway's whole ``ChatClient`` on its HTTP/1.1 client (``gateway.upstream._wire``, also
the path through a proxy), by events (``stream_chat``) and by text callback (``stream_text``,
the relay's path). ``--runs`` repeats the set and prints
each reader's median and spread (min to max), for a machine shared with other work. aiohttp is
a bench-only package here (the ``bench`` extra).

    python -m bench.ingest [--streams 200] [--tokens 300] [--tps 100] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import aiohttp
import httpx
import httpx2
import orjson
import uvloop

from bench.procs import raise_fd_limit, self_cpu_seconds, start_python, wait_port
from gateway.upstream import (
    ChatClient,
    ContentDelta,
    Deadline,
    SSEDecoder,
    Target,
    UpstreamSettings,
    WirePool,
)


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


async def via_aiohttp(session: aiohttp.ClientSession, url: str, q: str) -> int:
    decoder, n = SSEDecoder(), 0
    headers = {"content-type": "application/json"}
    async with session.post(url + "/chat/completions", data=_body(q), headers=headers) as response:
        async for chunk in response.content.iter_any():  # a read per chunk, as available
            n += len(decoder.feed(chunk))
    return n


async def via_text(chat: ChatClient, q: str) -> int:
    pieces: list[str] = []
    await chat.stream_text([{"role": "user", "content": q}], pieces.append)
    return len(pieces)


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
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            out.append(
                await measure("aiohttp iter_any", lambda: via_aiohttp(session, url, q), streams)
            )
        pool = WirePool(connect_timeout=5, idle_timeout=60, max_idle=streams)
        out.append(await measure("wire read", lambda: via_wire(pool, url, q), streams))
        pool.close()
        async with ChatClient(settings) as chat:
            out.append(await measure("ChatClient (wire)", lambda: via_chat(chat, q), streams))
            out.append(await measure("ChatClient text (wire)", lambda: via_text(chat, q), streams))
        return out
    finally:
        upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--tps", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {}
    for run in range(args.runs):
        for row in uvloop.run(main_async(args.streams, args.tokens, args.tps)):
            runs.setdefault(row["reader"], []).append(row["cpu_us_per_event"])
            print(
                f"run {run + 1}  {row['reader']:<24} {row['events']:>8} events"
                f"  {row['cpu_us_per_event']:>7} µs/event",
                flush=True,
            )
    if args.runs > 1:
        for reader, values in runs.items():
            print(
                f"{reader:<24} median {statistics.median(values):>6.1f} µs/event"
                f"  spread {min(values):.1f} to {max(values):.1f}"
            )


if __name__ == "__main__":
    main()
