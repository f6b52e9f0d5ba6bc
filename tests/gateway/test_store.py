"""One contract suite for both stores: ``MemoryStore`` and ``RedisStore`` (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from gateway import printer as printer_module
from gateway.printer import Printer
from gateway.protocol import TaskError, TaskStatus, new_task_id, now_ms
from gateway.store import (
    IdempotencyKeyReused,
    IllegalTransition,
    LeaseState,
    MemoryStore,
    RedisStore,
    StreamStore,
    TaskEnded,
    TaskExtras,
    TaskNotFound,
)
from tests.gateway.stores import body, read_durable, record, replicas, running

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis", "tls", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StreamStore]:
    if request.param == "memory":
        s: StreamStore = MemoryStore(result_ttl=60)
    elif request.param in ("redis", "tls"):  # TLS: redis-py's connections, no lane
        url = request.getfixturevalue("redis_url" if request.param == "redis" else "redis_tls_url")
        s = RedisStore(url, result_ttl=60, prefix=new_task_id())
    else:  # a local 3-master Redis Cluster
        url = request.getfixturevalue("redis_cluster_url")
        s = RedisStore(url, result_ttl=60, prefix=new_task_id(), cluster=True)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(params=["redis", "cluster"])
def redis_kind(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """A Redis URL and whether it is a Cluster: one plain server, then a 3-master cluster."""
    cluster = request.param == "cluster"
    return request.getfixturevalue("redis_cluster_url" if cluster else "redis_url"), cluster


async def test_append_assigns_consecutive_seqs_and_read_returns_them_after_a_cursor(
    store: StreamStore,
) -> None:
    task_id = await running(store)
    seqs = [(await store.append(task_id, body(str(i)))).seq for i in range(1, 11)]
    assert seqs == list(range(1, 11))
    await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result", "result": "x"})
    got = await store.read(task_id, 4, 100)
    assert [m.seq for m in got] == list(range(5, 12))
    assert [m.json()["result"] for m in got[:-1]] == [str(i) for i in range(5, 11)]
    assert got[-1].finish and got[-1].json()["finish"] is True
    assert [m.seq for m in await store.read(task_id, 0, 3)] == [1, 2, 3]
    assert await store.read(task_id, 11, 10) == []


async def test_append_now_takes_turns_with_append_and_ends_with_the_log(
    store: StreamStore,
) -> None:
    task_id = await running(store)
    first = store.append_now(task_id, body("1"))  # the owner appends without waiting
    second = await store.append(task_id, body("2"))
    third = store.append_now(task_id, body("3"))
    assert first is not None and third is not None
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result", "result": "x"})
    try:  # past the end: refused, or left to ``append`` (which refuses it)
        late = store.append_now(task_id, body("late"))
    except TaskEnded:
        late = None
    assert late is None
    with pytest.raises(TaskEnded):
        await store.append(task_id, body("late"))
    got = await store.read(task_id, 0, 10)
    assert [m.json().get("result") for m in got] == ["1", "2", "3", "x"]


async def test_a_printers_text_delta_is_the_message_send_writes_byte_for_byte(
    store: StreamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = await running(store)
    printer = Printer(store, task_id, "req-%d%%s")  # a format directive must stay text
    monkeypatch.setattr(printer_module, "now_ms", lambda: 1_700_000_000_123)
    monkeypatch.setattr(printer_module, "time_ns", lambda: 1_700_000_000_123_456_789)
    texts = ["plain ", 'quote " and \\ back', "line\nbreak\ttab \x01", "ünï 😀", ""]
    for kind, field in (("agent_stream", "result"), ("tool_thought", "toolThought")):
        for text in texts:
            fast = printer.text_delta_now("m-" + kind, text, kind)
            slow = await printer.send(kind, text, message_id="m-" + kind, is_final=False)
            assert fast is not None
            assert fast.data == slow.data.replace(b'"seq":%d,' % slow.seq, b'"seq":%d,' % fast.seq)
            assert fast.json()[field] == text and fast.json()["finish"] is False
    # the answer's deltas are kept as the streamed answer (a thought's are not)
    assert printer.partial_answer == "".join(t + t for t in texts)
    got = await read_durable(store, task_id, 4 * len(texts))
    assert [m.json().get("result") for m in got][: 2 * len(texts)] == [
        t for t in texts for _ in (1, 2)
    ]
    assert [m.json().get("toolThought") for m in got][2 * len(texts) :] == [
        t for t in texts for _ in (1, 2)
    ]


async def test_frames_carry_the_seq_as_sse_id(store: StreamStore) -> None:
    task_id = await running(store)
    msg = await store.append(task_id, body("hi"))
    assert msg.frame == b"id: 1\ndata: " + msg.data + b"\n\n"
    assert msg.json()["seq"] == 1


async def test_tail_blocks_until_a_message_arrives_then_returns_it(store: StreamStore) -> None:
    task_id = await running(store)
    waiter = asyncio.create_task(store.tail(task_id, 0, 5.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.append(task_id, body("a"))
    got = await asyncio.wait_for(waiter, 5)
    assert [m.seq for m in got] == [1]


async def test_tail_times_out_empty_when_nothing_is_appended(store: StreamStore) -> None:
    task_id = await running(store)
    assert await store.tail(task_id, 0, 0.05) == []


async def test_a_second_redis_store_tails_and_reads_what_the_first_writes(redis_url: str) -> None:
    async with replicas(redis_url) as (store, other):
        task_id = await running(store)
        waiter = asyncio.create_task(other.tail(task_id, 0, 5.0))
        await store.append(task_id, body("a"))
        got = await asyncio.wait_for(waiter, 5)
        assert [m.json()["result"] for m in got] == ["a"]
        await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"})
        rest = await other.read(task_id, 1, 10)
        assert [m.seq for m in rest] == [2] and rest[0].finish
        assert (await other.get(task_id)).status is TaskStatus.COMPLETED  # type: ignore[union-attr]


async def test_a_reader_waiting_before_the_claim_moves_to_the_local_log_and_gets_the_flush(
    redis_url: str,
) -> None:
    # A stream opened right after the POST waits on Redis; once this process claims the task
    # it waits on the local log, and gets each message once its flush is acknowledged.
    store = RedisStore(redis_url, result_ttl=60, prefix=new_task_id(), flush_interval=0.3)
    await store.start()
    try:
        rec, _ = await store.create(record())
        waiter = asyncio.create_task(store.tail(rec.task_id, 0, 10.0))
        await asyncio.sleep(0.2)  # the reader found nothing in Redis and waits there
        assert await store.claim(rec.task_id, "me", 10_000) is not None
        await store.append(rec.task_id, body("live"))
        assert not waiter.done()  # not before Redis has it
        got = await asyncio.wait_for(waiter, 5)
        assert [m.json()["result"] for m in got] == ["live"]
        assert await store._client.xlen(store._k.log(rec.task_id)) == 1
    finally:
        await store.close()


async def test_a_flush_refused_for_one_task_still_writes_the_others(
    redis_kind: tuple[str, bool],
) -> None:
    url, cluster = redis_kind
    async with replicas(url, cluster=cluster, flush_interval=0.3) as (store, other):
        kept, ended = await running(store), await running(store)
        await store.append(kept, body("a"))
        await store.append(ended, body("b"))
        # Another replica ends the second task before this one's flush (a sweep, a cancel).
        await other.finish(ended, TaskStatus.FAILED, {"messageType": "error"})
        await store.append(kept, body("c"))
        await asyncio.sleep(0.8)  # the flush has run
        assert [m.json()["result"] for m in await other.read(kept, 0, 10)] == ["a", "c"]
        assert [m.json()["messageType"] for m in await other.read(ended, 0, 10)] == ["error"]
        with pytest.raises(TaskEnded):
            await store.append(ended, body("late"))


async def test_flushes_are_spaced_under_load_and_immediate_after_a_quiet_spell(
    redis_url: str,
) -> None:
    async def durable(other: RedisStore, task_id: str) -> int:
        return len(await other.read(task_id, 0, 100))

    async with replicas(redis_url, flush_interval=0.0, flush_spacing=1.0) as (store, other):
        task_id = await running(store)
        await store.append(task_id, body("first"))  # quiet so far: flushed on the next turn
        for _ in range(100):
            if await durable(other, task_id):
                break
            await asyncio.sleep(0.005)
        await store.append(task_id, body("second"))  # within the spacing: waits its turn
        await asyncio.sleep(0.3)
        assert await durable(other, task_id) == 1  # "first" was durable at once, not "second"
        for _ in range(200):
            if await durable(other, task_id) == 2:
                break
            await asyncio.sleep(0.01)
        assert [m.json()["result"] for m in await other.read(task_id, 0, 10)] == [
            "first",
            "second",
        ]
        assert [m.json()["result"] for m in await store.read(task_id, 0, 10)] == [
            "first",
            "second",
        ]  # the writer's own readers never wait for a flush


async def test_a_finished_task_replays_from_memory_what_redis_holds(redis_url: str) -> None:
    # Readers coming back after the end share the frames already encoded for the live readers.
    async with replicas(redis_url) as (store, other):
        task_id = await running(store)
        sent = [await store.append(task_id, body(str(i))) for i in range(5)]
        await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"}, result="r")
        for _ in range(100):  # the finish is flushed, then the task moves between indexes
            if len(store._recent):
                break
            await asyncio.sleep(0.02)
        replay = await store.read(task_id, 2, 100)
        assert replay[:3] == sent[2:] and all(
            a is b for a, b in zip(replay, sent[2:], strict=False)
        )
        from_redis = await other.read(task_id, 2, 100)
        assert [m.data for m in replay] == [m.data for m in from_redis]
        assert await store.get(task_id) == await other.get(task_id)


async def test_a_flush_whose_reply_was_lost_is_completed_not_dropped(
    redis_kind: tuple[str, bool],
) -> None:
    url, cluster = redis_kind
    # Redis wrote a flush and went away before answering; the retry carries those messages
    # and newer ones: the newer ones must still be written, each message once.
    async with replicas(url, cluster=cluster, flush_interval=0.3) as (store, other):
        task_id = await running(store)
        first = await store.append(task_id, body("a"))
        landed = ["me", 1, 1, first.data, "", 0, "", "", 0, b""]  # that earlier flush
        assert await store._append(keys=store._k.task(task_id), args=landed) == [1]
        await store.append(task_id, body("b"))
        await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"})
        for _ in range(100):
            if (await other.get(task_id)).status is TaskStatus.COMPLETED:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        got = await other.read(task_id, 0, 10)
        assert [m.seq for m in got] == [1, 2, 3]
        assert [m.json().get("result") for m in got[:2]] == ["a", "b"] and got[2].finish


async def test_a_finish_durable_in_redis_is_readable_before_the_flush_reply(
    redis_url: str,
) -> None:
    # A poll may read the snapshot from Redis (finished) while this process still waits for
    # the reply of the flush that wrote it: the finish message must be readable too.
    prefix = new_task_id()
    store = RedisStore(redis_url, result_ttl=60, prefix=prefix, flush_interval=0.3)
    await store.start()
    try:
        task_id = await running(store)
        first = await store.append(task_id, body("a"))
        finishing = asyncio.create_task(
            store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"}, result="a")
        )
        await asyncio.sleep(0.05)  # the finish waits for the flush
        writer = store._writers[task_id]
        assert writer.final is not None
        landed = ["me", 1, 1, first.data, *writer.final]  # what that flush sends
        assert await store._append(keys=store._k.task(task_id), args=landed) == [2]
        snap = await store.get(task_id)
        assert snap is not None and snap.status is TaskStatus.COMPLETED and snap.last_seq == 2
        got = await store.read(task_id, 1, 10)
        assert [m.seq for m in got] == [2] and got[0].finish
        assert (await asyncio.wait_for(finishing, 5)).seq == 2  # the flush's retry agrees
    finally:
        await store.close()


async def test_nothing_can_be_appended_after_the_finish_message(store: StreamStore) -> None:
    task_id = await running(store)
    await store.append(task_id, body("a"))
    await store.finish(task_id, TaskStatus.CANCELLED, {"messageType": "status"})
    with pytest.raises(TaskEnded):
        await store.append(task_id, body("late"))
    with pytest.raises(TaskEnded):
        await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"})
    rec = await store.get(task_id)
    assert rec is not None and rec.status is TaskStatus.CANCELLED and rec.last_seq == 2
    assert rec.ended_at is not None


async def test_snapshot_reflects_status_times_result_and_error(store: StreamStore) -> None:
    rec, created = await store.create(record())
    assert created and rec.status is TaskStatus.PENDING
    claimed = await store.claim(rec.task_id, "me", 10_000)
    assert claimed is not None and claimed.status is TaskStatus.RUNNING
    assert claimed.started_at is not None and claimed.owner == "me"
    await store.finish(
        rec.task_id,
        TaskStatus.FAILED,
        {"messageType": "error"},
        error=TaskError("timeout", "too slow"),
        result="partial",
    )
    snap = await store.get(rec.task_id)
    assert snap is not None
    assert snap.status is TaskStatus.FAILED and snap.error == TaskError("timeout", "too slow")
    assert snap.result == "partial" and snap.last_seq == 1 and snap.owner is None


async def test_only_legal_status_transitions_happen(store: StreamStore) -> None:
    rec, _ = await store.create(record())
    # A third party ends a PENDING task only while it is still PENDING.
    expect_running = frozenset({TaskStatus.RUNNING})
    assert await store.finish(rec.task_id, TaskStatus.FAILED, {}, expect=expect_running) is None
    msg = await store.finish(
        rec.task_id,
        TaskStatus.CANCELLED,
        {"messageType": "status"},
        expect=frozenset({TaskStatus.PENDING}),
    )
    assert msg is not None and msg.seq == 1 and msg.finish
    assert await store.claim(rec.task_id, "me", 1000) is None
    if isinstance(store, MemoryStore):
        fresh, _ = await store.create(record())
        with pytest.raises(IllegalTransition):
            await store.finish(fresh.task_id, TaskStatus.PENDING, {})


async def test_a_task_is_claimed_once(store: StreamStore) -> None:
    rec, _ = await store.create(record())
    results = await asyncio.gather(*(store.claim(rec.task_id, f"w{i}", 1000) for i in range(5)))
    assert sum(r is not None for r in results) == 1


async def test_leases_renew_report_cancel_and_expire(store: StreamStore) -> None:
    task_id = await running(store)
    assert await store.renew(task_id, "me", 10_000) is LeaseState.OK
    assert await store.renew(task_id, "someone-else", 10_000) is LeaseState.LOST
    await store.request_cancel(task_id)
    assert await store.renew(task_id, "me", 10_000) is LeaseState.CANCEL
    assert task_id not in await store.expired_leases(now_ms())
    assert task_id in await store.expired_leases(now_ms() + 60_000)


async def test_cancelling_an_unknown_task_is_refused_and_writes_nothing(
    store: StreamStore,
) -> None:
    with pytest.raises(TaskNotFound):
        await store.request_cancel("no-such-task")
    assert await store.get("no-such-task") is None


async def test_finished_tasks_expire_after_the_result_ttl(store: StreamStore) -> None:
    if isinstance(store, RedisStore):
        store.result_ttl = 1
    else:
        assert isinstance(store, MemoryStore)
        store.result_ttl = 0.2
    task_id = await running(store)
    await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"})
    deadline = asyncio.get_running_loop().time() + 5
    while await store.get(task_id) is not None:
        assert asyncio.get_running_loop().time() < deadline, "task did not expire"
        await asyncio.sleep(0.1)
    with pytest.raises(TaskNotFound):
        await store.read(task_id, 0, 10)


async def test_listing_pages_newest_first_and_filters_by_status(store: StreamStore) -> None:
    ids = []
    for _ in range(7):
        rec, _ = await store.create(record())
        ids.append(rec.task_id)
        await asyncio.sleep(0.002)
    await store.claim(ids[0], "me", 10_000)
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page, cursor = await store.list_tasks(None, 3, cursor)
        seen.extend(r.task_id for r in page)
        if cursor is None:
            break
    mine = [t for t in seen if t in ids]
    assert mine == list(reversed(ids))
    assert len(seen) == len(set(seen))
    running_ids = []
    cursor = None
    for _ in range(50):
        page, cursor = await store.list_tasks(TaskStatus.RUNNING, 2, cursor)
        running_ids.extend(r.task_id for r in page)
        assert all(r.status is TaskStatus.RUNNING for r in page)
        if cursor is None:
            break
    assert ids[0] in running_ids and ids[1] not in running_ids
    found = await store.get_many([ids[2], "nope", ids[3]])
    assert [r.task_id for r in found] == [ids[2], ids[3]]


async def test_the_same_idempotency_key_returns_the_same_task(store: StreamStore) -> None:
    key = new_task_id()
    results = await asyncio.gather(*(store.create(record(), key) for _ in range(4)))
    assert len({r.task_id for r, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_an_idempotency_key_reused_for_another_request_is_refused(
    store: StreamStore,
) -> None:
    key = new_task_id()
    first, created = await store.create(record(request={"query": "a", "agentType": 0}), key)
    # The same request in another key order is the same request.
    again, again_created = await store.create(record(request={"agentType": 0, "query": "a"}), key)
    with pytest.raises(IdempotencyKeyReused):
        await store.create(record(request={"query": "b", "agentType": 0}), key)
    assert created and not again_created and again.task_id == first.task_id
    other, other_created = await store.create(record(request={"query": "b"}), new_task_id())
    assert other_created and other.task_id != first.task_id


async def test_the_queue_hands_each_task_to_one_consumer(store: StreamStore) -> None:
    ids = [new_task_id() for _ in range(5)]
    for task_id in ids:
        await store.enqueue(task_id)
    got = [await store.dequeue("c1", 1.0) for _ in range(5)]
    assert got == ids
    assert await store.dequeue("c1", 0.05) is None


async def test_dequeue_many_takes_a_batch_in_queue_order(store: StreamStore) -> None:
    ids = [new_task_id() for _ in range(5)]
    for task_id in ids:
        await store.enqueue(task_id)
    assert await store.dequeue_many("c1", 1.0, 3) == ids[:3]
    assert await store.dequeue_many("c1", 1.0, 10) == ids[3:]
    assert await store.dequeue_many("c1", 0.05, 10) == []


async def test_create_can_queue_the_task_in_the_same_call(store: StreamStore) -> None:
    rec, created = await store.create(record(), queue=True)
    assert created and await store.dequeue("c1", 1.0) == rec.task_id
    again, created = await store.create(record(), "same-key", queue=True)
    _, duplicate = await store.create(record(), "same-key", queue=True)
    assert created and not duplicate
    assert await store.dequeue("c1", 1.0) == again.task_id
    assert await store.dequeue("c1", 0.05) is None  # the duplicate was not queued


async def test_counts_follow_status(store: StreamStore) -> None:
    before = await store.count(TaskStatus.PENDING)
    rec, _ = await store.create(record())
    assert await store.count(TaskStatus.PENDING) == before + 1
    await store.claim(rec.task_id, "me", 1000)
    assert await store.count(TaskStatus.PENDING) == before
    completed = await store.count(TaskStatus.COMPLETED)
    running_now = await store.count(TaskStatus.RUNNING)
    await store.finish(rec.task_id, TaskStatus.COMPLETED, {"messageType": "result"})
    assert await store.get(rec.task_id) is not None
    # read your writes: the count right after the end has moved the task
    assert await store.count(TaskStatus.COMPLETED) == completed + 1
    assert await store.count(TaskStatus.RUNNING) == running_now - 1


async def test_requeue_hands_a_running_task_back_with_a_status_message(store: StreamStore) -> None:
    task_id = await running(store)
    await store.append(task_id, body("first run"))
    body_ = {"messageType": "status", "status": "PENDING"}
    # Another owner may not; without an owner only a lapsed lease allows it.
    assert await store.requeue(task_id, dict(body_), owner="other", now=now_ms()) is None
    assert await store.requeue(task_id, dict(body_), owner=None, now=now_ms()) is None
    msg = await store.requeue(task_id, dict(body_), owner="me", now=now_ms())
    assert msg is not None and msg.seq == 2 and not msg.finish
    rec = await store.get(task_id)
    assert rec is not None and rec.status is TaskStatus.PENDING and rec.attempts == 1
    again = await store.claim(task_id, "next", 10_000)
    assert again is not None and again.owner == "next"
    assert (await store.append(task_id, body("second run"))).seq == 3
    lapsed = await store.requeue(task_id, dict(body_), owner=None, now=now_ms() + 60_000)
    assert lapsed is not None and lapsed.seq == 4
    assert [m.seq for m in await store.read(task_id, 0, 10)] == [1, 2, 3, 4]


async def test_annotations_merge_per_kind_and_are_read_in_order(store: StreamStore) -> None:
    task_id = await running(store)
    await store.annotate(task_id, "webhook", {"attempts": "1"}, 60)
    await store.annotate(task_id, "webhook", {"status": "200"}, 60)
    await store.annotate(task_id, "owner", {"name": "alice"}, 60)
    got = await store.annotations([task_id, "unknown"], "webhook")
    assert got == [{"attempts": "1", "status": "200"}, {}]
    assert await store.annotations([task_id], "owner") == [{"name": "alice"}]


@pytest.mark.parametrize("how", ["queued", "bounded", "claimed"])
async def test_notes_and_deliveries_given_to_create_are_written_with_the_task_and_due_at_its_end(
    store: StreamStore, how: str
) -> None:
    kwargs: dict[str, Any] = {
        "queued": {"queue": True},
        "bounded": {"queue": True, "max_queued": 10_000},  # the create's writes in one script
        "claimed": {"claim": ("me", 10_000)},
    }[how]
    extras = TaskExtras(
        notes={"a2a": {"contextId": "ctx", "message": "{}"}, "a2a-push": {"c1": "{}"}},
        note_ttl=60,
        deliveries=["a2a-push:c1"],
    )
    key = new_task_id()
    rec, created = await store.create(record(), key, extras=extras, **kwargs)
    task_id = rec.task_id
    pending = {"status": "pending", "attempts": []}
    assert created
    assert await store.annotations([task_id], "a2a") == [{"contextId": "ctx", "message": "{}"}]
    assert await store.annotations([task_id], "a2a-push") == [{"c1": "{}"}]
    assert await store.outbox.records(task_id) == {"a2a-push:c1": pending}
    assert task_id not in await store.outbox.due(now_ms(), 100)
    # A retry (the same key) is the first task as it was: nothing of its extras is written.
    retry = record(task_id=new_task_id())
    other = TaskExtras(notes={"a2a": {"contextId": "other"}}, note_ttl=60, deliveries=["x:2"])
    again, created_again = await store.create(retry, key, extras=other, **kwargs)
    assert (again.task_id, created_again) == (task_id, False)
    assert await store.annotations([task_id, retry.task_id], "a2a") == [
        {"contextId": "ctx", "message": "{}"},
        {},
    ]
    assert await store.outbox.records(task_id) == {"a2a-push:c1": pending}
    assert await store.outbox.records(retry.task_id) == {}
    if how != "claimed":
        assert await store.claim(task_id, "me", 10_000) is not None
    await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result", "result": "x"})
    with anyio.fail_after(5):  # the due index moves behind the finish's reply (Redis)
        while task_id not in await store.outbox.due(now_ms(), 100):
            await asyncio.sleep(0.01)


# -- tenants -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["queued", "claimed"])
async def test_a_task_s_tenant_is_written_with_its_record_and_decides_who_sees_it(
    store: StreamStore, how: str
) -> None:
    kwargs: dict[str, Any] = {"queue": True} if how == "queued" else {"claim": ("me", 10_000)}
    alice, _ = await store.create(record(tenant="alice"), **kwargs)
    bob, _ = await store.create(record(tenant="bob"), **kwargs)
    assert (await store.get_for(alice.task_id, "alice")) == await store.get(alice.task_id)
    assert (await store.get_for(alice.task_id, None)) is not None  # auth off: everyone
    assert await store.get_for(alice.task_id, "bob") is None
    assert await store.get_for("unknown", "alice") is None
    page, _ = await store.list_tasks(None, 10, None, tenant="alice")
    assert [r.task_id for r in page] == [alice.task_id]
    both = await store.get_many([alice.task_id, bob.task_id])
    assert [r.task_id for r in await store.only_tenant(both, "bob")] == [bob.task_id]
    # Claiming and ending the task rewrite its record: the tenant stays.
    if how == "queued":
        assert await store.claim(alice.task_id, "me", 10_000) is not None
    done = {"messageType": "result", "result": "done"}
    await store.finish(alice.task_id, TaskStatus.COMPLETED, done, result="done")
    ended = await store.get_for(alice.task_id, "alice")
    assert ended is not None and ended.tenant == "alice" and ended.terminal


async def test_another_replica_reads_the_tenant_from_the_record(
    redis_kind: tuple[str, bool],
) -> None:
    url, cluster = redis_kind
    async with replicas(url, cluster=cluster) as (store, other):
        created, _ = await store.create(record(tenant="alice"), queue=True)
        seen = await other.get(created.task_id)
        assert seen is not None and seen.tenant == "alice"
        assert await other.get_for(created.task_id, "bob") is None


async def test_a_task_from_an_earlier_release_keeps_its_owner_note_s_tenant(
    store: StreamStore,
) -> None:
    # Earlier releases wrote the record without a tenant and the name in an ``owner`` note.
    older, _ = await store.create(record(), queue=True)
    await store.annotate(older.task_id, "owner", {"name": "alice"}, 60)
    unowned, _ = await store.create(record(), queue=True)
    assert await store.get_for(older.task_id, "alice") is not None
    assert await store.get_for(older.task_id, "bob") is None
    assert await store.get_for(unowned.task_id, "alice") is None
    page, _ = await store.list_tasks(None, 10, None, tenant="alice")
    assert [r.task_id for r in page] == [older.task_id]
