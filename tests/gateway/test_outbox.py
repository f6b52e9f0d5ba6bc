"""The durable outbox in the store (both stores), and what a webhook receiver gets from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
import pytest

from gateway.protocol import TaskStatus, new_task_id, now_ms
from gateway.security import SecuritySettings, parse_api_keys
from gateway.store import WEBHOOK, Claim, MemoryStore, RedisStore, StreamStore
from tests.gateway.stores import record
from tests.gateway.test_webhooks import hooked, receiving, settings_for
from tests.helpers import client_of

pytestmark = pytest.mark.anyio

HOOK = {"callbackUrl": "http://hooks.example/h"}
FINAL = {"messageType": "result", "result": "done"}


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StreamStore]:
    if request.param == "memory":
        s: StreamStore = MemoryStore(result_ttl=60)
    else:
        cluster = request.param == "cluster"
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        s = RedisStore(url, result_ttl=60, prefix=new_task_id(), cluster=cluster)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def due_soon(store: StreamStore, task_id: str) -> None:
    """Wait (bounded) until ``task_id`` is among the due deliveries (the index move after an
    end runs behind the finish's reply in ``RedisStore``)."""
    with anyio.fail_after(5):
        while task_id not in await store.outbox.due(now_ms(), 100):
            await asyncio.sleep(0.01)


async def test_a_webhook_is_in_the_store_from_creation_and_due_once_its_task_ends(
    store: StreamStore,
) -> None:
    outbox = store.outbox
    rec, _ = await store.create(record(request=HOOK), claim=("worker", 10_000))
    plain, _ = await store.create(record(), claim=("worker", 10_000))
    task_id = rec.task_id
    assert await outbox.records(task_id) == {WEBHOOK: {"status": "pending", "attempts": []}}
    assert await outbox.records(plain.task_id) == {}
    assert task_id not in await outbox.due(now_ms(), 100)
    assert (await outbox.claim(task_id, "a", 10_000)).state is Claim.RUNNING
    await store.finish(task_id, TaskStatus.COMPLETED, dict(FINAL))
    await store.finish(plain.task_id, TaskStatus.COMPLETED, dict(FINAL))
    await due_soon(store, task_id)
    assert plain.task_id not in await outbox.due(now_ms(), 100)

    first = await outbox.claim(task_id, "a", 10_000)
    assert first.state is Claim.OK and first.records[WEBHOOK]["status"] == "pending"
    assert (await outbox.claim(task_id, "b", 10_000)).state is Claim.LEASED
    tried = {"status": "pending", "attempts": [{"at": 1, "status": 500}], "count": 1}
    assert not await outbox.settle(task_id, "b", {WEBHOOK: tried}, None)  # b holds no lease
    retry_at = now_ms() + 60_000
    assert await outbox.settle(task_id, "a", {WEBHOOK: tried}, retry_at)
    assert (await outbox.records(task_id))[WEBHOOK] == tried
    assert task_id not in await outbox.due(now_ms(), 100)
    assert task_id in await outbox.due(retry_at, 100)
    second = await outbox.claim(task_id, "b", 10_000)  # released: any replica goes on
    assert second.state is Claim.OK and second.records[WEBHOOK] == tried
    delivered = {**tried, "status": "delivered", "count": 2}
    assert await outbox.settle(task_id, "b", {WEBHOOK: delivered}, None)
    assert task_id not in await outbox.due(retry_at, 100)
    assert (await outbox.records(task_id))[WEBHOOK]["status"] == "delivered"


async def test_an_end_by_a_third_party_and_a_late_enrollment_are_due_at_once(
    store: StreamStore,
) -> None:
    outbox = store.outbox
    pending, _ = await store.create(record(request=HOOK))
    ended = await store.finish(
        pending.task_id,
        TaskStatus.CANCELLED,
        {"messageType": "status", "status": "CANCELLED"},
        expect=frozenset({TaskStatus.PENDING}),
    )
    assert ended is not None
    await due_soon(store, pending.task_id)
    late, _ = await store.create(record(), claim=("worker", 10_000))
    await store.finish(late.task_id, TaskStatus.COMPLETED, dict(FINAL))
    assert await outbox.enroll(late.task_id, "a2a-push:c1")
    assert late.task_id in await outbox.due(now_ms(), 100)
    assert await outbox.records(late.task_id) == {
        "a2a-push:c1": {"status": "pending", "attempts": []}
    }
    assert not await outbox.enroll("no-such-task", "a2a-push:c1")


async def test_a_lapsed_lease_lets_another_replica_take_over(store: StreamStore) -> None:
    outbox = store.outbox
    rec, _ = await store.create(record(request=HOOK), claim=("worker", 10_000))
    await store.finish(rec.task_id, TaskStatus.FAILED, dict(FINAL))
    assert (await outbox.claim(rec.task_id, "a", 50)).state is Claim.OK
    await asyncio.sleep(0.1)  # a dies holding the lease; it lapses
    assert (await outbox.claim(rec.task_id, "b", 10_000)).state is Claim.OK
    assert not await outbox.settle(rec.task_id, "a", {WEBHOOK: {"status": "failed"}}, None)
    assert await outbox.settle(rec.task_id, "b", {WEBHOOK: {"status": "delivered"}}, None)
    assert (await outbox.records(rec.task_id))[WEBHOOK] == {"status": "delivered"}


async def test_a_running_task_claimed_by_mistake_is_looked_at_later_and_gone_ones_dropped(
    store: StreamStore,
) -> None:
    outbox = store.outbox
    rec, _ = await store.create(record(request=HOOK), claim=("worker", 10_000))
    await outbox.later(rec.task_id, now_ms() - 1)  # as a replica's recheck would make it due
    assert rec.task_id in await outbox.due(now_ms(), 100)
    assert (await outbox.claim(rec.task_id, "a", 10_000)).state is Claim.RUNNING
    at = now_ms() + 30_000
    await outbox.later(rec.task_id, at)
    assert rec.task_id not in await outbox.due(now_ms(), 100)
    assert rec.task_id in await outbox.due(at, 100)
    assert (await outbox.claim("no-such-task", "a", 10_000)).state is Claim.GONE


# -- what a receiver gets ----------------------------------------------------------------------
async def read_log(client: Any, task_id: str, after: int, upto: int) -> list[dict[str, Any]]:
    """The messages after ``after`` up to ``upto``, polled with ``?after`` in small pages."""
    messages: list[dict[str, Any]] = []
    while after < upto:
        page = await client.get(f"/api/tasks/{task_id}", params={"after": after, "limit": 3})
        body = page.json()
        messages += body["messages"]
        assert body["nextAfter"] > after
        after = body["nextAfter"]
    return messages


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


async def test_the_payload_s_last_seq_is_a_cursor_into_the_log(store_url: str | None) -> None:
    with receiving() as (receiver, url), hooked(settings_for(), store_url) as gw:
        async with client_of(gw) as client:
            body = {
                "query": "one two three four five six seven",
                "agentType": 0,
                "callbackUrl": url,
            }
            task_id = (await client.post("/api/tasks", json=body)).json()["taskId"]
            with anyio.fail_after(15):
                while not receiver.calls:
                    await anyio.sleep(0.02)
            payload = orjson.loads(receiver.calls[0].body)
            last_seq = payload["data"]["lastSeq"]
            messages = await read_log(client, task_id, 0, last_seq)
            beyond = (await client.get(f"/api/tasks/{task_id}", params={"after": last_seq})).json()
    assert [m["seq"] for m in messages] == list(range(1, last_seq + 1))
    assert messages[-1]["finish"] is True and messages[-1]["result"] == body["query"]
    assert beyond["messages"] == [] and beyond["nextAfter"] == last_seq


async def test_the_attempts_are_shown_to_the_task_s_owner_only(store_url: str | None) -> None:
    keys = SecuritySettings(api_keys=parse_api_keys("alice:ka,bob:kb"))
    webhooks = settings_for(backoff=30.0)  # the second attempt is far off
    with receiving([503]) as (receiver, url), hooked(webhooks, store_url, security=keys) as gw:
        async with client_of(gw) as client:
            alice, bob = {"Authorization": "Bearer ka"}, {"Authorization": "Bearer kb"}
            body = {"query": "q", "agentType": 0, "callbackUrl": url}
            created = await client.post("/api/tasks", json=body, headers=alice)
            task_id = created.json()["taskId"]
            route = f"/api/tasks/{task_id}/webhook"
            with anyio.fail_after(15):
                while (await client.get(route, headers=alice)).json()["attempts"] < 1:
                    await anyio.sleep(0.02)
            shown = (await client.get(route, headers=alice)).json()
            others = await client.get(route, headers=bob)
    assert len(receiver.calls) == 1
    assert shown["status"] == "pending" and shown["attempts"] == 1
    assert shown["lastStatus"] == 503 and shown["lastError"] == "HTTP 503"
    [attempt] = shown["history"]
    assert attempt["status"] == 503 and attempt["error"] == "HTTP 503"
    assert attempt["at"] == shown["lastAttemptAt"]
    assert shown["nextAttemptAt"] >= attempt["at"] + 29_000
    assert shown["webhookId"] == receiver.calls[0].headers["webhook-id"]
    assert others.status_code == 404 and others.json()["error"]["code"] == "not_found"
