"""Helpers of the gateway tests: a gateway on a real uvicorn server, an SSE reader."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from gateway.app import create_app
from gateway.settings import Settings
from gateway.store import StreamStore
from gateway.tasks import TaskRegistry
from tests.helpers import ThreadedServer, serve_app

#: How long a test gateway's intake reads the queue at a time (``INTAKE_WAIT``). A gateway that
#: stops waits for that read to end, and the suite stops hundreds of gateways: 1 s each, with
#: the default, is what a deployment wants, not a test.
INTAKE_WAIT = 0.05


@contextlib.contextmanager
def gateway(
    redis_url: str | None = None,
    registry: TaskRegistry | None = None,
    *,
    store: StreamStore | None = None,
    **overrides: Any,
) -> Iterator[ThreadedServer]:
    """A gateway app (MemoryStore, or RedisStore with ``redis_url``, or ``store``) on a free
    port."""
    fields = {
        "echo_token_delay_ms": 1.0,
        "heartbeat_interval": 15.0,
        "intake_wait": INTAKE_WAIT,
        "redis_prefix": f"agw-test-{secrets.token_hex(4)}",  # each test its own key space
        **overrides,
    }
    settings = dataclasses.replace(Settings.from_env({}), redis_url=redis_url, **fields)
    app = create_app(settings, store=store, registry=registry)
    with serve_app(app) as server:
        yield server


@dataclasses.dataclass
class SSEResult:
    """What one SSE connection delivered."""

    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ids: list[str] = dataclasses.field(default_factory=list)
    comments: list[str] = dataclasses.field(default_factory=list)
    retry: int | None = None
    raw: bytes = b""

    @property
    def seqs(self) -> list[int]:
        return [int(e["seq"]) for e in self.events]


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    json: Any = None,
    stop_after: int | None = None,
    stop_on_comment: bool = False,
) -> SSEResult:
    """Read an SSE response to its end (or until ``stop_after`` events); parse every frame."""
    from gateway.upstream.sse import SSEDecoder

    async with client.stream(method, url, headers=headers, json=json) as response:
        result = SSEResult(response.status_code, response.headers)
        decoder = SSEDecoder(on_comment=result.comments.append)
        async for chunk in response.aiter_raw():
            result.raw += chunk
            for event in decoder.feed(chunk):
                result.events.append(orjson.loads(event.data))
                result.ids.append(event.id)
            result.retry = decoder.retry
            if stop_after is not None and len(result.events) >= stop_after:
                break
            if stop_on_comment and result.comments:
                break
    return result


def echo_query(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


def merged(events: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """What a reader shows after ``events``: per ``messageId`` its type (by its latest frame)
    and content, the pieces of a long final joined (``PieceJoiner``), then a text delta
    appended and a final frame taken whole (DESIGN §3)."""
    from gateway.protocol import PAYLOAD_FIELDS
    from gateway.protocol.compaction import PieceJoiner

    joiner = PieceJoiner()
    shown: dict[str, tuple[str, Any]] = {}
    for piece in events:
        event = joiner.feed(piece)
        if event is None:
            continue
        kind = event["messageType"]
        value = event.get(PAYLOAD_FIELDS[kind])
        before = shown.get(event["messageId"], (kind, ""))[1]
        if isinstance(value, str) and not event["isFinal"] and isinstance(before, str):
            value = before + value
        shown[event["messageId"]] = (kind, value)
    return shown
