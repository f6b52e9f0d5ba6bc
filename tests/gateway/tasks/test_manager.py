"""The task manager's start path: a task created here begins in the turn its record lands;
its intake's reads of the queue wait as long as configured."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

from gateway.protocol import AgentRequest, TaskStatus, new_task_id
from gateway.settings import Settings, SettingsError
from gateway.store import MemoryStore, RedisStore
from gateway.tasks import TaskContext, TaskManager, TaskRegistry, TaskSettings

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def manager_on(url: str, handler_started: asyncio.Event) -> AsyncIterator[TaskManager]:
    """A running manager over a Redis store whose agent 0 says "hi" once it has started."""

    async def say_hi(ctx: TaskContext) -> None:
        handler_started.set()
        await ctx.printer.send("agent_stream", "hi")

    registry = TaskRegistry()
    registry.register(0, say_hi, name="hi")
    store = RedisStore(url, result_ttl=60, prefix=new_task_id())
    await store.start()
    manager = TaskManager(store, registry, TaskSettings(max_running=4))
    runner = asyncio.create_task(manager.run())
    try:
        while manager._group is None:  # the intake's task group is up
            await asyncio.sleep(0)
        yield manager
    finally:
        await manager.stop(grace=1)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await store.close()


async def test_a_task_created_here_has_begun_when_its_submission_returns(redis_url: str) -> None:
    started = asyncio.Event()
    async with manager_on(redis_url, started) as manager:
        record, created = await manager.submit(AgentRequest(query="q", agentType=0))
        # No turn of the loop since the record landed: the task is registered as running,
        # its RUNNING status is on its way and its handler's task exists, so the handler's
        # first step (an agent's upstream request) is the next turn's, not the one after.
        assert created and record.status is TaskStatus.RUNNING
        handler_task = manager.running[record.task_id].handler_task
        assert handler_task is not None and not started.is_set()
        with anyio.fail_after(10):
            final = await manager.wait_terminal(record.task_id, 10)
        messages = await manager.store.read(record.task_id, 0, 10)
    assert final.status is TaskStatus.COMPLETED
    kinds = [(m.seq, m.data.split(b'"messageType":"')[1].split(b'"')[0]) for m in messages]
    assert kinds[:2] == [(1, b"status"), (2, b"agent_stream")]  # the status first, as before
    assert b'"status":"RUNNING"' in messages[0].data


class _RecordingStore(MemoryStore):
    """The embedded store, noting how long each of the intake's reads of the queue may wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.read = asyncio.Event()

    async def dequeue_many(self, consumer: str, timeout: float, limit: int) -> list[str]:
        self.waits.append(timeout)
        self.read.set()
        return await super().dequeue_many(consumer, timeout, limit)


@pytest.mark.parametrize(("env", "wait"), [({}, 1.0), ({"INTAKE_WAIT": "0.05"}, 0.05)])
async def test_the_intake_reads_the_queue_for_intake_wait_seconds_at_a_time(
    env: dict[str, str], wait: float
) -> None:
    store = _RecordingStore()
    await store.start()
    manager = TaskManager(store, TaskRegistry(), Settings.from_env(env).task_settings())
    runner = asyncio.create_task(manager.run())
    try:
        with anyio.fail_after(10):
            await store.read.wait()
    finally:
        await manager.stop(grace=0)  # returns once the intake's read has ended
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await store.close()
    assert store.waits and set(store.waits) == {wait}


def test_intake_wait_must_be_a_positive_number_of_seconds() -> None:
    for bad in ("0", "soon"):
        with pytest.raises(SettingsError, match="INTAKE_WAIT"):
            Settings.from_env({"INTAKE_WAIT": bad})
