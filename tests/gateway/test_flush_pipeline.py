"""Two flushes in flight on the Redis store's lane: appends made while a flush awaits its reply
go out at once in the next one (a token waits about one round trip), and readers still get
every message once, in order, only after Redis acknowledged it (DESIGN §3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from gateway.protocol import StoredMessage, TaskStatus, new_task_id
from gateway.store import RedisStore
from gateway.store._lane import CLIENT_NAME
from tests.gateway.stores import body, running

pytestmark = pytest.mark.anyio


async def lanes(plain: aioredis.Redis) -> list[dict[str, Any]]:
    """Every store lane connected to this Redis, as ``CLIENT LIST`` shows it."""
    return [c for c in await plain.client_list() if c["name"] == CLIENT_NAME.decode()]


class Lanes:
    """The lane of the store started after this was made (by ``CLIENT LIST``)."""

    def __init__(self, plain: aioredis.Redis, before: list[dict[str, Any]]) -> None:
        self.plain = plain
        self.before = {c["id"] for c in before}

    async def state(self) -> dict[str, Any]:
        new = [c for c in await lanes(self.plain) if c["id"] not in self.before]
        assert len(new) == 1, new
        return new[0]

    async def until(self, what: str, check: Any) -> None:
        """Poll (bounded) until the lane's entry passes ``check``."""
        for _ in range(200):
            if check(await self.state()):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the lane never showed {what}: {await self.state()}")


def held(lane: dict[str, Any]) -> bool:
    """Redis holds a flush (paused writes block the lane on its EVALSHA)."""
    return "b" in lane["flags"] and lane["cmd"] == "evalsha"


def queued(lane: dict[str, Any]) -> bool:
    """A further flush waits in the lane's query buffer behind the held one."""
    return held(lane) and int(lane["qbuf"]) > 0


@contextlib.asynccontextmanager
async def pushed_store(
    url: str,
) -> AsyncIterator[tuple[RedisStore, Lanes, str, list[StoredMessage]]]:
    """A started store, its lane, a running task and what a live reader parked on the task's
    log was pushed."""
    plain = aioredis.Redis.from_url(url)
    lane = Lanes(plain, await lanes(plain))
    store = RedisStore(url, result_ttl=60, prefix=new_task_id())
    await store.start()
    try:
        task_id = await running(store)
        await store.append(task_id, body("first"))  # the lane is connected once flushed
        log = store.live_log(task_id, 0)
        assert log is not None
        pushed: list[StoredMessage] = []

        def push(message: StoredMessage) -> bool:
            pushed.append(message)
            return True

        parked = asyncio.create_task(log.park(push, 30))
        yield store, lane, task_id, pushed
        parked.cancel()
    finally:
        with contextlib.suppress(Exception):
            await plain.execute_command("CLIENT", "UNPAUSE")
        await store.close()
        await plain.aclose()


async def until_pushed(pushed: list[StoredMessage], count: int) -> list[int]:
    async with asyncio.timeout(5):
        while len(pushed) < count:
            await asyncio.sleep(0.01)
    return [m.seq for m in pushed]


async def test_appends_made_while_a_flush_awaits_its_reply_are_sent_before_that_reply(
    redis_url: str,
) -> None:
    async with pushed_store(redis_url) as (store, lane, task_id, pushed):
        plain = lane.plain
        await until_pushed(pushed, 1)
        await plain.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        store.append_now(task_id, body("a"))
        await lane.until("a held flush", held)
        store.append_now(task_id, body("b"))
        store.append_now(task_id, body("c"))
        await lane.until("a second flush behind the held one", queued)
        assert [m.seq for m in pushed] == [1]  # nothing visible before Redis answers
        assert [m.seq for m in await store.read(task_id, 0, 10)] == [1]
        await plain.execute_command("CLIENT", "UNPAUSE")
        assert await until_pushed(pushed, 4) == [1, 2, 3, 4]
        got = await store.read(task_id, 0, 10)
        assert [m.json()["result"] for m in got] == ["first", "a", "b", "c"]


async def test_two_flushes_cut_off_by_a_dropped_lane_are_written_once_each_in_order(
    redis_url: str,
) -> None:
    async with pushed_store(redis_url) as (store, lane, task_id, pushed):
        plain = lane.plain
        await until_pushed(pushed, 1)
        await plain.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        store.append_now(task_id, body("a"))
        await lane.until("a held flush", held)
        store.append_now(task_id, body("b"))
        await lane.until("a second flush behind the held one", queued)
        await plain.client_kill_filter(_id=(await lane.state())["id"])
        await plain.execute_command("CLIENT", "UNPAUSE")
        store.append_now(task_id, body("c"))
        await store.finish(task_id, TaskStatus.COMPLETED, body("end"))
        log_key = store._k.task(task_id)[1]  # what Redis holds
        got = [
            (int(i.split(b"-")[0]), orjson.loads(f[b"d"])) for i, f in await plain.xrange(log_key)
        ]
        assert [(seq, data["seq"], data["result"]) for seq, data in got] == [
            (1, 1, "first"),
            (2, 2, "a"),
            (3, 3, "b"),
            (4, 4, "c"),
            (5, 5, "end"),
        ]
        assert [m.seq for m in pushed] == [1, 2, 3, 4, 5]
