"""Helpers shared by the store tests: task records, started tasks, two replicas' stores."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from gateway.protocol import StoredMessage, TaskRecord, new_task_id, now_ms
from gateway.store import RedisStore, StreamStore


def record(**kw: Any) -> TaskRecord:
    return TaskRecord(
        task_id=kw.pop("task_id", new_task_id()),
        request_id="r",
        agent_type=0,
        query="q",
        created_at=now_ms(),
        **kw,
    )


async def running(store: StreamStore) -> str:
    rec, _ = await store.create(record())
    assert await store.claim(rec.task_id, "me", 10_000) is not None
    return rec.task_id


@contextlib.asynccontextmanager
async def replicas(
    url: str, *, cluster: bool = False, flush_interval: float = 0.002, flush_spacing: float = 0.0
) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two started Redis stores on one prefix, as two replicas: ``store`` (flushing
    ``flush_interval`` seconds after an append, at most once per ``flush_spacing``) and
    ``other``."""
    prefix = new_task_id()
    store = RedisStore(
        url,
        result_ttl=60,
        prefix=prefix,
        cluster=cluster,
        flush_interval=flush_interval,
        flush_spacing=flush_spacing,
    )
    other = RedisStore(url, result_ttl=60, prefix=prefix, cluster=cluster)
    await store.start()
    await other.start()
    try:
        yield store, other
    finally:
        await other.close()
        await store.close()


def body(text: str) -> dict[str, Any]:
    return {"messageType": "agent_stream", "result": text}


async def read_durable(
    store: StreamStore, task_id: str, count: int, *, after: int = 0, timeout: float = 5.0
) -> list[StoredMessage]:
    """The ``count`` messages after ``after``, waited for (bounded) until readers may see
    them: with Redis, once their flush is acknowledged (DESIGN §3, durable before visible)."""
    got: list[StoredMessage] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += await store.tail(task_id, after + len(got), timeout)
    return got
