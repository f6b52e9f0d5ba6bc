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


def stored_log(redis_url: str, prefix: str, task_id: str) -> list[dict[str, Any]]:
    """A task's log as Redis holds it (not a replay: every delta still there), decoded."""
    import orjson
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(f"{prefix}:{{{task_id}}}:log")
    finally:
        client.close()
    return [orjson.loads(fields[b"d"]) for _, fields in entries]


def replay_problems(seen: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[str]:
    """What is wrong with ``seen`` (what a reader got, in order, across its resumes) against
    ``stored`` (the log as stored): each frame must be the stored message of its seq, seqs
    must go up, and a stored message may be missing only if it is a delta whose message's
    final frame the reader got after it (a compacted replay, DESIGN §5) — never a silent gap."""
    by_seq = {int(m["seq"]): m for m in stored}
    order = [int(m["seq"]) for m in seen]
    problems = []
    if order != sorted(set(order)) or not order or order[-1] != len(stored):
        problems.append(f"saw seqs {order}, log {len(stored)}")
    changed = [int(m["seq"]) for m in seen if by_seq.get(int(m["seq"])) != m]
    if changed:
        problems.append(f"seqs {changed} differ from the log")
    finals = {m["messageId"]: int(m["seq"]) for m in seen if m.get("isFinal")}
    got = set(order)
    for seq, message in by_seq.items():
        if seq in got:
            continue
        final = finals.get(message.get("messageId"), 0)
        if message.get("isFinal", True) or final <= seq:
            problems.append(f"seq {seq} missing, and no final frame of its message after it")
    return problems
