"""Deployment-wide limits (``gateway.store._limits``): the rate limit's buckets and the queue
bound, kept by the store — in Redis for all replicas, in memory for the embedded store.

The contract tests run against the four stores of ``test_store``; the replica tests start two
or three gateways on one Redis key space and expect together what one would allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from gateway.protocol import TaskStatus
from gateway.security import SecuritySettings, parse_api_keys
from gateway.store import QueueLimitReached, RedisStore, StreamStore
from gateway.store._limits import TokenBuckets
from tests.gateway import test_store
from tests.gateway.stores import record, replicas
from tests.gateway.support import echo_query, gateway
from tests.helpers import ThreadedServer, free_port

pytestmark = pytest.mark.anyio

store = test_store.store  # the contract suite's fixture: memory, Redis, TLS, Cluster
redis_kind = test_store.redis_kind  # plain Redis, then a Cluster


def test_a_token_bucket_grants_the_burst_then_refills_at_the_rate() -> None:
    now = [100.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    assert [buckets.acquire("k", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.acquire("k", 2.0, 3) == pytest.approx(0.5)
    assert buckets.acquire("other", 2.0, 3) == 0.0
    now[0] += 0.5
    assert buckets.acquire("k", 2.0, 3) == 0.0
    assert buckets.acquire("k", 2.0, 3) > 0


# -- the contract ------------------------------------------------------------------------------
async def test_a_bucket_grants_its_burst_then_says_how_long_to_wait(store: StreamStore) -> None:
    granted = [await store.limits.take("alice", 0.5, 3) for _ in range(3)]
    wait = await store.limits.take("alice", 0.5, 3)
    assert granted == [0.0, 0.0, 0.0]
    assert 1.5 < wait <= 2.0  # one token at 0.5 a second, less the time the calls took
    assert await store.limits.take("bob", 0.5, 3) == 0.0


async def test_a_queued_create_past_max_queued_is_refused_and_stores_nothing(
    store: StreamStore,
) -> None:
    first, _ = await store.create(record(), queue=True, max_queued=2)
    kept, _ = await store.create(record(), "kept", queue=True, max_queued=2)
    with pytest.raises(QueueLimitReached):
        await store.create(record(), "refused", queue=True, max_queued=2)
    # Full, yet the key of a task that exists still names it; a claimed create is not queued.
    again, created = await store.create(record(), "kept", queue=True, max_queued=2)
    assert again.task_id == kept.task_id and not created
    _, created = await store.create(record(), claim=("me", 10_000), max_queued=2)
    assert created
    assert await store.count(TaskStatus.PENDING) == 2
    # A task taken off the queue makes room; the refused key was never taken.
    assert await store.dequeue("c1", 1.0) == first.task_id
    assert await store.claim(first.task_id, "me", 10_000) is not None
    assert await store.count(TaskStatus.PENDING) == 1
    late, created = await store.create(record(), "refused", queue=True, max_queued=2)
    assert created and await store.dequeue("c1", 1.0) == kept.task_id
    assert await store.dequeue("c1", 1.0) == late.task_id


async def test_a_queued_create_within_the_bound_writes_all_of_the_task_and_a_refused_one_none(
    store: StreamStore,
) -> None:
    hook = {"query": "q", "callbackUrl": "http://127.0.0.1:9/hook"}  # its webhook, in the outbox
    kept, _ = await store.create(record(request=hook), queue=True, max_queued=1)
    refused = record(request=hook)
    with pytest.raises(QueueLimitReached):
        await store.create(refused, queue=True, max_queued=1)
    assert await store.get(kept.task_id) == kept
    assert await store.outbox.records(kept.task_id) != {}
    assert await store.get(refused.task_id) is None
    assert await store.outbox.records(refused.task_id) == {}
    listed, _ = await store.list_tasks(None, 10, None)
    assert [t.task_id for t in listed] == [kept.task_id]


async def test_the_replicas_of_a_deployment_share_each_bucket(redis_kind: tuple[str, bool]) -> None:
    url, cluster = redis_kind
    async with replicas(url, cluster=cluster) as (one, two):
        granted = [await s.limits.take("alice", 1 / 60, 3) for s in (one, two, one)]
        refused = [await s.limits.take("alice", 1 / 60, 3) for s in (two, one)]
        other = await two.limits.take("bob", 1 / 60, 3)
    assert granted == [0.0, 0.0, 0.0] and other == 0.0
    assert all(55 < wait <= 60 for wait in refused)


async def test_while_redis_is_unreachable_a_replica_counts_in_its_own_buckets() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        granted = [await store.limits.take("alice", 1.0, 2) for _ in range(2)]
        wait = await store.limits.take("alice", 1.0, 2)
    finally:
        await store.close()
    assert granted == [0.0, 0.0] and 0.5 < wait <= 1.0


async def test_the_queue_bound_holds_for_replicas_creating_at_once(
    redis_kind: tuple[str, bool],
) -> None:
    url, cluster = redis_kind
    async with replicas(url, cluster=cluster) as (one, two):

        async def create(index: int) -> bool:
            try:
                await (one, two)[index % 2].create(record(), queue=True, max_queued=5)
            except QueueLimitReached:
                return False
            return True

        admitted = await asyncio.gather(*(create(i) for i in range(16)))
        assert sum(admitted) == 5
        assert await one.count(TaskStatus.PENDING) == 5


# -- replicas of the gateway -------------------------------------------------------------------
@contextlib.contextmanager
def deployment(redis_url: str, count: int, **overrides: Any) -> Iterator[list[ThreadedServer]]:
    """``count`` gateways (in-process uvicorn servers) on one Redis key space."""
    prefix = f"agw-test-{secrets.token_hex(4)}"
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(gateway(redis_url, redis_prefix=prefix, **overrides))
            for _ in range(count)
        ]


async def test_three_replicas_together_admit_the_configured_rate_per_key(redis_url: str) -> None:
    keys = parse_api_keys("alice:sk-alice,bob:sk-bob")
    security = SecuritySettings(api_keys=keys, rate_limit_rps=10 / 60, rate_limit_burst=10)
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
    with deployment(redis_url, 3, security=security) as servers:
        async with httpx.AsyncClient(timeout=30) as client:
            statuses = [
                (await client.get(f"{servers[i % 3].url}/api/tasks", headers=alice)).status_code
                for i in range(10)
            ]
            refused = await client.get(f"{servers[1].url}/api/tasks", headers=alice)
            other = await client.get(f"{servers[2].url}/api/tasks", headers=bob)
    assert statuses == [200] * 10
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 6  # a token every 6 s
    assert other.status_code == 200


async def test_three_replicas_together_hold_the_queue_bound(redis_url: str) -> None:
    body = {"query": echo_query(2000), "agentType": 0}  # runs 100 s: until cancelled
    with deployment(redis_url, 3, max_running=1, max_queued=3, echo_token_delay_ms=50) as servers:
        urls = [server.url for server in servers]
        async with httpx.AsyncClient(timeout=30) as client:
            running = [(await client.post(f"{url}/api/tasks", json=body)).json() for url in urls]
            # One at a time, in turn: each replica sees the others' tasks in the count.
            answers = [await client.post(f"{urls[i % 3]}/api/tasks", json=body) for i in range(6)]
            # And at once: the count and the create are one step.
            answers += await asyncio.gather(
                *(client.post(f"{urls[i % 3]}/api/tasks", json=body) for i in range(6))
            )
            queued = [a.json()["taskId"] for a in answers if a.status_code == 202]
            with anyio.fail_after(30):
                for task_id in [t["taskId"] for t in running] + queued:
                    await client.post(f"{urls[0]}/api/tasks/{task_id}/cancel")
    assert [t["status"] for t in running] == ["RUNNING"] * 3
    assert [a.status_code for a in answers] == [202] * 3 + [429] * 9
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
