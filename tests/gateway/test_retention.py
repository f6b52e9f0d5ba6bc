"""Bounded retention (``LOG_MAX_BYTES``): compaction at rest, and a ``reset`` for an old cursor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
import pytest

from gateway.protocol import StoredMessage, TaskStatus, new_task_id, task_snapshot
from gateway.protocol.compaction import compact
from gateway.store import MemoryStore, RedisStore, StreamStore, replay
from gateway.tasks import TaskContext, TaskRegistry
from tests.gateway.stores import running
from tests.gateway.support import gateway, merged, read_sse
from tests.gateway.test_streams import _sse_ids, completed, flooding, read_lagging, submit

pytestmark = pytest.mark.anyio

BOUND = 20_000


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StreamStore]:
    """A store whose task logs are bounded to ``BOUND`` bytes."""
    if request.param == "memory":
        s: StreamStore = MemoryStore(result_ttl=60, log_max_bytes=BOUND)
    else:
        cluster = request.param == "cluster"
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        s = RedisStore(
            url, result_ttl=60, prefix=new_task_id(), cluster=cluster, log_max_bytes=BOUND
        )
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def text(mid: str, final: bool, value: str) -> dict[str, Any]:
    return {"messageId": mid, "messageType": "agent_stream", "isFinal": final, "result": value}


async def everything(store: StreamStore, task_id: str) -> list[StoredMessage]:
    return await store.read(task_id, 0, 100_000)


async def settled(store: StreamStore, task_id: str, done: Any) -> list[StoredMessage]:
    """The retained log once ``done(log)`` holds (a Redis pass runs in the background)."""
    with anyio.fail_after(10):
        while not done(log := await everything(store, task_id)):
            await asyncio.sleep(0.01)
    return log


async def test_the_deltas_of_a_finished_message_are_dropped_at_rest_and_replay_is_the_same(
    store: StreamStore,
) -> None:
    task_id = await running(store)
    parts = [f"part {i:04d} " + "x" * 30 for i in range(120)]  # 13 KB of deltas
    for part in parts:
        await store.append(task_id, text("a", False, part))
    await store.append(task_id, text("a", True, "".join(parts)))  # over the bound now
    await store.append(task_id, text("b", False, "live"))
    log = await settled(store, task_id, lambda log: len(log) == 2)
    assert [m.seq for m in log] == [121, 122]  # the final and the delta of an open message
    assert await store.floor(task_id) == 0  # nothing a reader needs is gone: no reset
    after = await replay(store, task_id, 0, 10_000)  # what it was before: the compacted log
    assert [m.data for m in after] == [m.data for m in compact(log)] == [m.data for m in log]
    assert after[0].json()["result"] == "".join(parts)
    assert [m.seq for m in await replay(store, task_id, 57, 10)] == [121, 122]


async def test_a_cursor_older_than_the_retained_history_gets_a_reset_then_the_rest(
    store: StreamStore,
) -> None:
    task_id = await running(store)
    for i in range(200):  # 200 finished messages of ~200 bytes: 40 KB, no delta to drop
        await store.append(task_id, text(f"m{i}", True, f"message {i:03d} " + "y" * 120))
    log = await settled(store, task_id, lambda log: bool(log) and log[0].seq > 1)
    floor = await store.floor(task_id)
    assert floor == log[0].seq - 1 > 0
    assert sum(len(m.data) for m in log) <= BOUND
    record = await store.get(task_id)
    assert record is not None and record.last_seq == 200
    for cursor in (0, floor - 1):
        frames = await replay(store, task_id, cursor, 10_000)
        reset = frames[0].json()
        assert frames[0].seq == floor and reset["seq"] == floor
        assert reset["messageType"] == "reset" and reset["isFinal"] and not reset["finish"]
        snapshot = reset["snapshot"]
        assert snapshot == orjson.loads(orjson.dumps(task_snapshot(record)))
        assert [m.seq for m in frames[1:]] == list(range(floor + 1, 201))
    # At or after the floor, resume is exact: no reset.
    assert [m.seq for m in await replay(store, task_id, floor, 10_000)] == list(
        range(floor + 1, 201)
    )
    finish = await store.finish(task_id, TaskStatus.COMPLETED, text("end", True, "done"))
    assert finish is not None and (await replay(store, task_id, 0, 3))[-1].seq == floor + 2


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def thinker() -> TaskRegistry:
    """Type 7: 400 thoughts of ~250 bytes (100 KB of final frames: nothing to compact), then
    an answer streamed in 300 deltas."""
    registry = TaskRegistry()

    async def think(ctx: TaskContext) -> None:
        for i in range(400):
            await ctx.printer.send("tool_thought", f"thought {i:03d} " + "z" * 100)
        answer = ctx.printer.stream("agent_stream")
        for i in range(300):
            await answer.delta(f"w{i} ")
        await answer.final(ANSWER)
        ctx.printer.result(ANSWER)

    registry.register(7, think)
    return registry


ANSWER = "".join(f"w{i} " for i in range(300))


async def test_sse_and_polling_from_an_old_cursor_get_the_reset_then_continue_exactly(
    store_url: str | None,
) -> None:
    with gateway(store_url, registry=thinker(), log_max_bytes=50_000) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            response = await client.post("/api/tasks", json={"query": "q", "agentType": 7})
            task_id = response.json()["taskId"]
            url = f"/api/tasks/{task_id}/events"
            with anyio.fail_after(60):
                await read_sse(client, url)  # to the end
                snapshot = (await client.get(f"/api/tasks/{task_id}")).json()
                stream = await read_sse(client, url)
                reset = stream.events[0]
                floor = reset["seq"]
                polled = (await client.get(f"/api/tasks/{task_id}?after=0&limit=2")).json()
                resumed = await read_sse(client, url, headers={"Last-Event-ID": str(floor)})
                older = await read_sse(client, url, headers={"Last-Event-ID": str(floor - 1)})
    assert reset["messageType"] == "reset" and floor > 0 and stream.ids[0] == str(floor)
    assert reset["snapshot"] == snapshot
    assert stream.events[1:] == resumed.events  # after the reset, exactly as from its id
    assert older.events[0]["messageType"] == "reset" and older.events[1:] == resumed.events
    assert resumed.seqs[0] > floor
    assert stream.events[-1]["finish"] and stream.seqs[-1] == snapshot["lastSeq"]
    answer = [v for kind, v in merged(resumed.events).values() if kind == "agent_stream"]
    assert answer == [ANSWER]
    first = polled["messages"][0]
    assert first == reset | {"messageTime": first["messageTime"]}
    assert polled["nextAfter"] == polled["messages"][-1]["seq"] == resumed.seqs[0]


async def trimmed(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """The ``reset`` a poll from 0 gets, once the task's floor is raised (callers bound it)."""
    while True:
        poll = (await client.get(f"/api/tasks/{task_id}?after=0&limit=1")).json()
        if poll["messages"][0]["messageType"] == "reset":
            return dict(poll["messages"][0])
        await asyncio.sleep(0.05)


async def test_a_live_reader_lagging_past_the_floor_gets_the_reset_in_its_stream(
    store_url: str | None,
) -> None:
    started = asyncio.Event()
    registry = flooding(1500, first=("start", started))  # ~24 MB while the reader lags
    bound = 2_000_000
    with gateway(store_url, registry=registry, send_timeout=30.0, log_max_bytes=bound) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, "burst", agent_type=7)

            floor: dict[str, Any] = {}

            async def lag() -> None:
                await completed(client, task_id)  # the task ends while its reader lags
                floor.update(await trimmed(client, task_id))  # (Redis trims in the background)

            with anyio.fail_after(60):
                raw = await read_lagging(server.port, task_id, started, lag())
    ids = _sse_ids(raw)
    if store_url is not None and b'"messageType":"reset"' not in raw:
        # This replica still held the whole log in memory (the trim came after the task's
        # end, and its finished log is kept a while for readers): every frame, no gap.
        assert ids == list(range(1, 1504))
        return
    at = ids.index(floor["seq"])
    assert b'"messageType":"reset"' in raw
    # Up to where it lagged, every frame; then the reset at the floor; then every one after it.
    assert ids[:at] == list(range(1, at + 1)) and ids[at] > at
    assert ids[at + 1 :] == list(range(ids[at] + 1, 1504))
