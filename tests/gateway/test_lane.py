"""The flusher's own Redis connection (``gateway.store._lane``): real Redis, and small servers
that misbehave on purpose. Run on both the standard loop and uvloop (the servers' loop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.protocol import TaskStatus, new_task_id
from gateway.store import RedisStore
from gateway.store._lane import CLIENT_NAME, Lane, pack
from tests.gateway.stores import body, replicas, running
from tests.helpers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[False, True], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    return "asyncio", {"use_uvloop": request.param}


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_redis(handler: Handler) -> AsyncIterator[int]:
    """A server on 127.0.0.1 whose n-th connection (from 0) is served by ``handler``."""
    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        try:
            await handler(reader, writer, count - 1)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def answer_setup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the lane's CLIENT SETNAME and say OK."""
    await reader.readuntil(CLIENT_NAME + b"\r\n")
    writer.write(b"+OK\r\n")


async def durable(other: RedisStore, task_id: str, count: int) -> list[Any]:
    """What Redis holds of the task's log once it holds ``count`` messages."""
    for _ in range(200):
        got = await other.read(task_id, 0, 100)
        if len(got) >= count:
            return [(m.seq, m.json().get("result"), m.finish) for m in got]
        await asyncio.sleep(0.01)
    raise AssertionError(f"Redis holds {await other.read(task_id, 0, 100)}")


async def test_pack_encodes_a_resp_array_of_bulk_strings() -> None:
    assert pack([b"SET", b"k", b"a\r\nb", b""]) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$0\r\n\r\n"
    )


@contextlib.asynccontextmanager
async def flushed_once(url: str) -> AsyncIterator[tuple[RedisStore, RedisStore, Any, str]]:
    """Two replicas' stores, a plain client, and a task whose first message is in Redis."""
    async with replicas(url, flush_interval=0.0) as (store, other):
        plain = aioredis.Redis.from_url(url)
        try:
            task_id = await running(store)
            await store.append(task_id, body("a"))
            assert await durable(other, task_id, 1) == [(1, "a", False)]
            yield store, other, plain, task_id
        finally:
            await plain.aclose()


async def test_flushes_go_out_on_the_lane_and_survive_redis_forgetting_the_script(
    redis_url: str,
) -> None:
    async with flushed_once(redis_url) as (store, other, plain, task_id):
        clients = (await plain.execute_command("CLIENT", "LIST")).decode()
        assert f"name={CLIENT_NAME.decode()}" in clients
        await plain.script_flush()  # a Redis restarted without its script cache
        await store.append(task_id, body("b"))
        await store.finish(task_id, TaskStatus.COMPLETED, body("c"))
        assert await durable(other, task_id, 3) == [
            (1, "a", False),
            (2, "b", False),
            (3, "c", True),
        ]


async def test_a_flush_after_the_lane_was_killed_connects_again_and_loses_nothing(
    redis_url: str,
) -> None:
    async with flushed_once(redis_url) as (store, other, plain, task_id):
        lanes = [c["id"] for c in await plain.client_list() if c["name"] == CLIENT_NAME.decode()]
        assert lanes  # this store's lane (and any other store's still open)
        for client_id in lanes:
            await plain.client_kill_filter(_id=client_id)
        for i in range(20):
            await store.append(task_id, body(str(i)))
        await store.finish(task_id, TaskStatus.COMPLETED, body("end"))
        got = await durable(other, task_id, 22)
        assert [seq for seq, _, _ in got] == list(range(1, 23)) and got[-1][2]


async def test_a_task_set_up_after_the_lane_was_killed_is_created_once_and_listed(
    redis_url: str,
) -> None:
    async with flushed_once(redis_url) as (store, other, plain, _running):
        for client in await plain.client_list():
            if client["name"] == CLIENT_NAME.decode():
                await plain.client_kill_filter(_id=client["id"])
        task_id = await running(store)  # create (on the lane, retried) and claim
        await store.finish(task_id, TaskStatus.COMPLETED, body("done"))
        record = await other.get(task_id)
        assert record is not None and record.status is TaskStatus.COMPLETED
        assert await store.count(TaskStatus.COMPLETED) >= 1
        listed, _ = await other.list_tasks(TaskStatus.COMPLETED, 100, None)
        assert task_id in [r.task_id for r in listed]
        assert await store.count(TaskStatus.RUNNING) == 1  # the one flushed_once started


@pytest.fixture
async def real_lane(redis_url: str) -> AsyncIterator[Lane]:
    """A lane to the suite's Redis, closed after the test."""
    lane = Lane.for_pool(aioredis.Redis.from_url(redis_url).connection_pool, 5.0)
    assert lane is not None
    try:
        yield lane
    finally:
        lane.close()


async def test_calls_answers_every_command_and_raises_the_first_error_reply(
    real_lane: Lane,
) -> None:
    lane = real_lane
    key = f"agw-lane-{new_task_id()}"
    replies = await lane.calls([pack(["SET", key, 1]), pack(["INCRBY", key, 2])])
    assert replies == [b"OK", 3]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await lane.calls([pack(["LPUSH", key, "x"]), pack(["INCR", key])])
    assert await lane.call(pack(["GET", key])) == b"4"  # the INCR after the error ran
    await lane.call(pack(["DEL", key]))


async def test_the_calls_of_one_turn_go_out_in_one_write_and_get_their_own_replies(
    real_lane: Lane,
) -> None:
    lane = real_lane
    key = f"agw-lane-{new_task_id()}"
    await lane.call(pack(["DEL", key]))  # connected
    protocol = lane._protocol
    assert protocol is not None and protocol.transport is not None
    transport = protocol.transport
    writes: list[bytes] = []

    class Counting:  # the transport, with its writes recorded
        def __getattr__(self, name: str) -> Any:
            return getattr(transport, name)

        def write(self, data: bytes) -> None:
            writes.append(data)
            transport.write(data)

    protocol.transport = Counting()  # type: ignore[assignment]
    replies = await asyncio.gather(
        *(lane.call(pack(["INCRBY", key, n])) for n in range(1, 21)),
        lane.calls([pack(["GET", key]), pack(["STRLEN", key])]),
    )
    assert len(writes) == 1
    assert replies[:20] == [n * (n + 1) // 2 for n in range(1, 21)]  # in order, each its own
    assert replies[20] == [b"210", 3]
    assert await lane.call(pack(["GET", key])) == b"210"
    assert len(writes) == 2
    await lane.call(pack(["DEL", key]))


async def test_the_lane_selects_the_database_and_authenticates_as_its_url_says(
    redis_url: str,
) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    user, secret, key = f"agw-{new_task_id()}", new_task_id(), f"agw-lane-{new_task_id()}"
    await plain.acl_setuser(
        user, enabled=True, passwords=[f"+{secret}"], keys=["*"], commands=["+@all"]
    )
    try:
        host_port = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        url = f"redis://{user}:{secret}@{host_port}/3"
        lane = Lane.for_pool(aioredis.Redis.from_url(url).connection_pool, timeout=5)
        assert lane is not None
        try:
            assert await lane.call(pack([b"SET", key.encode(), b"v"])) == b"OK"
        finally:
            lane.close()
        in_db3 = aioredis.Redis.from_url(f"redis://{host_port}/3")
        try:
            assert await in_db3.get(key) == b"v" and await plain.get(key) is None
            await in_db3.delete(key)
        finally:
            await in_db3.aclose()
        wrong = Lane.for_pool(
            aioredis.Redis.from_url(f"redis://{user}:nope@{host_port}/0").connection_pool, 5
        )
        assert wrong is not None
        with pytest.raises(ResponseError):
            await wrong.call(pack([b"PING"]))
    finally:
        await plain.acl_deluser(user)
        await plain.aclose()


async def test_tls_urls_keep_redis_py() -> None:
    assert (
        Lane.for_pool(aioredis.Redis.from_url("rediss://127.0.0.1:1/0").connection_pool, 1) is None
    )


async def test_a_redis_that_does_not_answer_fails_the_call_at_the_time_limit() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await answer_setup(reader, writer)
        await reader.read()  # reads the command, answers nothing, until the lane gives up

    async with fake_redis(silent) as port:
        lane = Lane(port=port, timeout=0.2)
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(lane.call(pack([b"PING"])), 5)
        lane.close()


async def test_calls_queued_when_the_connection_fails_in_the_same_turn_fail_quietly(
    real_lane: Lane,
) -> None:
    lane = real_lane
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        assert await lane.call(pack([b"PING"])) == b"PONG"
        protocol = lane._protocol
        assert protocol is not None
        queued = asyncio.ensure_future(lane.call(pack([b"PING"])))
        await asyncio.sleep(0)  # the call is queued for this turn's write, not yet written
        protocol.fail(RedisConnectionError("gone"))
        with pytest.raises(RedisConnectionError, match="gone"):
            await queued
        await asyncio.sleep(0.05)
        assert errors == []  # nothing was written to the closed transport
        assert await lane.call(pack([b"PING"])) == b"PONG"  # and the next call connects again
    finally:
        loop.set_exception_handler(None)


async def test_a_later_call_gets_its_own_time_limit_after_an_answered_one() -> None:
    async def first_only(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await answer_setup(reader, writer)
        await reader.readuntil(b"PING\r\n")
        writer.write(b"+PONG\r\n")  # the first call is answered, the second never
        await reader.read()

    async with fake_redis(first_only) as port:
        lane = Lane(port=port, timeout=0.5)
        loop = asyncio.get_running_loop()
        assert await lane.call(pack([b"PING"])) == b"PONG"
        await asyncio.sleep(0.3)  # the watch armed for the first call fires in the wait below
        started = loop.time()
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(lane.call(pack([b"PING"])), 5)
        assert loop.time() - started >= 0.45  # not failed by the first call's deadline
        lane.close()


async def test_a_call_in_flight_when_the_connection_drops_fails_and_the_next_connects_again() -> (
    None
):
    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await answer_setup(reader, writer)
        await reader.readuntil(b"PING\r\n")
        if n == 0:
            return  # the first connection closes with the call unanswered
        writer.write(b"+PONG\r\n")
        await writer.drain()
        await reader.read()

    async with fake_redis(flaky) as port:
        lane = Lane(port=port, timeout=5)
        with pytest.raises(RedisConnectionError):
            await lane.call(pack([b"PING"]))
        assert await lane.call(pack([b"PING"])) == b"PONG"
        lane.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    with pytest.raises(RedisConnectionError):
        await Lane(port=free_port(), timeout=2).call(pack([b"PING"]))
