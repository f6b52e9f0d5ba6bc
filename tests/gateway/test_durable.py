"""Durable before visible (DESIGN §3): readers of the Redis store are served up to the
durable high-water mark — what Redis has acknowledged — and nothing they saw is taken back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.protocol import StoredMessage, TaskStatus, new_task_id
from gateway.store import MemoryStore, RedisStore, TaskEnded
from tests.gateway.stores import body, read_durable, replicas, running

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def writes_paused(url: str) -> AsyncIterator[None]:
    """Redis holds every write (a flush waits for its reply) until the block ends."""
    client = aioredis.Redis.from_url(url)
    await client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        yield
    finally:
        await client.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()


async def test_a_message_reaches_no_reader_before_redis_acknowledges_its_write(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, result_ttl=60, prefix=new_task_id())
    await store.start()
    try:
        task_id = await running(store)
        log = store.live_log(task_id, 0)
        assert log is not None
        pushed: list[StoredMessage] = []
        got_one = asyncio.Event()

        def push(message: StoredMessage) -> bool:
            pushed.append(message)
            got_one.set()
            return True

        parked = asyncio.create_task(log.park(push, 30))
        async with writes_paused(redis_url):
            sent = store.append_now(task_id, body("a"))
            assert sent is not None and sent.seq == 1  # its seq is taken at once
            assert await store.tail(task_id, 0, 0.3) == []  # a waiting reader: nothing
            assert await store.read(task_id, 0, 10) == []  # a poll: nothing
            assert pushed == []  # a live stream: nothing
        async with asyncio.timeout(5):
            await got_one.wait()
        assert [m.data for m in pushed] == [sent.data]
        assert [m.data for m in await store.read(task_id, 0, 10)] == [sent.data]
        parked.cancel()
    finally:
        await store.close()


async def test_a_writer_whose_task_was_ended_elsewhere_takes_back_nothing_a_reader_saw(
    redis_url: str,
) -> None:
    # This process's worker stalls past its lease with messages not yet flushed; the sweeper
    # of another replica ends the task. The terminal message takes the seq after what Redis
    # holds, and no reader of this process ever saw the messages Redis refused.
    async with replicas(redis_url, flush_interval=1.0) as (store, other):
        task_id = await running(store)
        await store.append(task_id, body("a"))
        assert [m.json()["result"] for m in await read_durable(store, task_id, 1)] == ["a"]
        reader = asyncio.create_task(read_durable(store, task_id, 1, after=1))
        await store.append(task_id, body("b"))  # pending: its flush waits 1 s
        snapshot = await store.get(task_id)  # a poll's snapshot: what Redis holds
        assert snapshot is not None and snapshot.last_seq == 1
        end = await other.finish(
            task_id,
            TaskStatus.FAILED,
            {"messageType": "error", "error": {"code": "interrupted", "message": "x"}},
            expect=frozenset({TaskStatus.RUNNING}),
        )
        assert end is not None and end.seq == 2
        seen = await reader
        assert [(m.seq, m.data, m.finish) for m in seen] == [(2, end.data, True)]
        logged = await other.read(task_id, 0, 10)
        assert [m.json()["messageType"] for m in logged] == ["agent_stream", "error"]
        assert [m.data for m in await store.read(task_id, 0, 10)] == [m.data for m in logged]
        with pytest.raises(TaskEnded):
            await store.append(task_id, body("late"))


async def test_the_memory_store_shows_a_message_as_soon_as_it_is_appended() -> None:
    store = MemoryStore(result_ttl=60)
    task_id = await running(store)
    sent = store.append_now(task_id, body("a"))
    assert sent is not None
    assert await store.read(task_id, 0, 10) == [sent]  # durable once appended: the mark


async def test_a_poll_while_the_finish_is_in_flight_gets_at_most_its_limit(redis_url: str) -> None:
    # Redis may hold a whole flush (messages and the finish) before this process has its reply:
    # a poll then reads them from Redis, a page of ``limit`` at a time.
    store = RedisStore(redis_url, result_ttl=60, prefix=new_task_id(), flush_interval=0.3)
    await store.start()
    try:
        task_id = await running(store)
        sent = [await store.append(task_id, body(text)) for text in "abc"]
        finishing = asyncio.create_task(
            store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"}, result="abc")
        )
        writer = store._writers[task_id]
        async with asyncio.timeout(5):
            while writer.final is None:  # the finish waits for the flush
                await asyncio.sleep(0.01)
        landed = ["me", 1, 3, *(m.data for m in sent), *writer.final]  # what that flush sends
        assert await store._append(keys=store._k.task(task_id), args=landed) == [4]
        assert [m.seq for m in await store.read(task_id, 0, 2)] == [1, 2]
        rest = await store.read(task_id, 2, 10)
        assert [m.seq for m in rest] == [3, 4] and rest[-1].finish
        assert (await asyncio.wait_for(finishing, 5)).seq == 4
    finally:
        await store.close()
