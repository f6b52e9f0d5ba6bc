"""The task manager's start path: a task created here begins in the turn its record lands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

from gateway.protocol import AgentRequest, TaskStatus, new_task_id
from gateway.store import RedisStore
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
