"""The baseline: a relay written the way common tutorials write it.

sse-starlette's ``EventSourceResponse`` around an async generator that streams the upstream with
``httpx`` (``aiter_lines``, stdlib ``json``), awaits one Redis ``XADD`` per token (so a client can
resume) and yields the token. ``GET /events/{key}`` replays and tails a stream with blocking
``XREAD`` (fan-out and resume); ``GET /idle`` is an idle stream with sse-starlette's pings.

    python -m bench.naive --port 9001 --redis redis://… --upstream http://…/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
import uvloop
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.procs import raise_fd_limit


def build_app(redis_url: str, upstream: str, ping: float, prefix: str) -> Starlette:
    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None))
    store: Any = aioredis.Redis.from_url(redis_url)  # redis-py types replies as wide unions

    async def relay(request: Request) -> EventSourceResponse:
        body = await request.json()
        name = body.get("key") or uuid.uuid4().hex
        key = f"{prefix}:{name}"

        async def events() -> AsyncIterator[dict[str, object]]:
            n = 0
            payload = {
                "model": "bench",
                "stream": True,
                "messages": [{"role": "user", "content": body["query"]}],
            }
            async with client.stream("POST", upstream + "/chat/completions", json=payload) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        break
                    delta = json.loads(data)["choices"][0]["delta"].get("content")
                    if not delta:
                        continue
                    n += 1
                    message = json.dumps({"seq": n, "result": delta})
                    await store.xadd(key, {"d": message}, id=f"0-{n}")
                    if n == 1:
                        await store.expire(key, 3600)
                    yield {"id": str(n), "data": message}
            n += 1
            message = json.dumps({"seq": n, "finish": True})
            await store.xadd(key, {"d": message, "f": "1"}, id=f"0-{n}")
            await store.expire(key, 3600)
            yield {"id": str(n), "data": message}

        return EventSourceResponse(events(), ping=ping, headers={"X-Task-Id": name})

    async def replay(request: Request) -> EventSourceResponse:
        key = f"{prefix}:{request.path_params['key']}"
        last = int(request.headers.get("last-event-id") or 0)

        async def events() -> AsyncIterator[dict[str, object]]:
            cursor = f"0-{last}"
            while True:
                reply = await store.xread({key: cursor}, block=1000, count=100)
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        cursor = entry_id.decode()
                        yield {"id": cursor[2:], "data": fields[b"d"].decode()}
                        if b"f" in fields:
                            return

        return EventSourceResponse(events(), ping=ping)

    async def idle(request: Request) -> EventSourceResponse:
        async def events() -> AsyncIterator[dict[str, object]]:
            await asyncio.Event().wait()
            yield {"data": ""}

        return EventSourceResponse(events(), ping=ping)

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/relay", relay, methods=["POST"]),
            Route("/events/{key}", replay),
            Route("/idle", idle),
            Route("/health", health),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--ping", type=float, default=15.0)
    parser.add_argument("--prefix", default="naive", help="Redis key prefix")
    args = parser.parse_args()
    raise_fd_limit()
    app = build_app(args.redis, args.upstream, args.ping, args.prefix)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="none",
        http="httptools",
        log_level="warning",
        backlog=16384,
        timeout_graceful_shutdown=3,
    )
    uvloop.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
