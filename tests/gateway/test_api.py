"""The task API: idempotency, back-pressure, sweeping, timeouts, listing and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import anyio
import httpx
import pytest

from gateway.protocol import TaskRecord, new_task_id, now_ms
from gateway.tasks import TaskContext, TaskFailure, TaskRegistry
from tests.gateway.support import echo_query, gateway, merged, read_sse
from tests.helpers import spawn_service

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


async def test_the_same_idempotency_key_twice_creates_one_task(store_url: str | None) -> None:
    with gateway(store_url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            key = {"Idempotency-Key": new_task_id()}
            body = {"query": "once", "agentType": 0}
            first = await client.post("/api/tasks", json=body, headers=key)
            second = await client.post("/api/tasks", json=body, headers=key)
            other = await client.post("/api/tasks", json=body)
            task_id = first.json()["taskId"]
            with anyio.fail_after(10):
                events = (await read_sse(client, f"/api/tasks/{task_id}/events")).events
            listed = (await client.get("/api/tasks", params={"limit": 200})).json()["tasks"]
    assert first.status_code == second.status_code == 202
    assert first.headers["location"] == f"/api/tasks/{task_id}"
    assert second.json()["taskId"] == task_id != other.json()["taskId"]
    assert sum(e["messageType"] == "result" for e in events) == 1
    assert sum(t["taskId"] == task_id for t in listed) == 1


async def test_a_replica_with_a_free_slot_starts_a_submission_at_once(
    store_url: str | None,
) -> None:
    # Two slots: a task, the same task again (its idempotency key), then another task. The
    # retry must give back the slot it reserved, so the third starts too; a fourth waits.
    with gateway(store_url, max_running=2, echo_token_delay_ms=50) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            body = {"query": echo_query(100), "agentType": 0}
            key = {"Idempotency-Key": new_task_id()}
            first = (await client.post("/api/tasks", json=body, headers=key)).json()
            again = (await client.post("/api/tasks", json=body, headers=key)).json()
            other = (await client.post("/api/tasks", json=body)).json()
            queued = (await client.post("/api/tasks", json=body)).json()
            snapshot = (await client.get(f"/api/tasks/{other['taskId']}")).json()
            for task in (first, other, queued):
                await client.post(f"/api/tasks/{task['taskId']}/cancel")
    assert again["taskId"] == first["taskId"]
    assert [first["status"], other["status"], queued["status"]] == ["RUNNING", "RUNNING", "PENDING"]
    assert snapshot["status"] == "RUNNING" and snapshot["startedAt"] is not None


async def test_a_full_queue_answers_429_with_retry_after(store_url: str | None) -> None:
    with gateway(store_url, max_running=1, max_queued=1, echo_token_delay_ms=50) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            body = {"query": echo_query(100), "agentType": 0}
            running = (await client.post("/api/tasks", json=body)).json()["taskId"]
            with anyio.fail_after(10):
                await read_sse(client, f"/api/tasks/{running}/events", stop_after=2)
            queued = await client.post("/api/tasks", json=body)
            refused = await client.post("/api/tasks", json=body)
            for task_id in (running, queued.json()["taskId"]):
                await client.post(f"/api/tasks/{task_id}/cancel")
    assert queued.status_code == 202
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"


async def test_the_sweeper_ends_a_task_whose_lease_lapsed_and_its_reader_gets_the_end(
    store_url: str | None,
) -> None:
    with gateway(store_url, sweep_interval=0.1) as server:
        store = server.server.config.app.state.store  # type: ignore[attr-defined]
        loop = server.server.config.app.state.manager  # type: ignore[attr-defined]
        task_id = new_task_id()
        record = TaskRecord(task_id, task_id, 0, "orphan", created_at=now_ms())

        async def orphan() -> None:  # a worker that claimed the task, wrote, then died
            await store.create(record)
            await store.claim(task_id, "dead-worker", 800)
            await store.append(task_id, {"messageType": "task", "task": "started"})

        fut = asyncio.run_coroutine_threadsafe(orphan(), _loop_of(loop))
        await asyncio.wrap_future(fut)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            with anyio.fail_after(20):
                result = await read_sse(client, f"/api/tasks/{task_id}/events")
            snap = (await client.get(f"/api/tasks/{task_id}")).json()
    assert result.seqs == [1, 2]
    end = result.events[-1]
    assert end["messageType"] == "error" and end["finish"] is True
    assert end["error"]["code"] == "interrupted"
    assert snap["status"] == "FAILED" and snap["error"]["code"] == "interrupted"


def _loop_of(manager: object) -> asyncio.AbstractEventLoop:
    group = manager._group  # type: ignore[attr-defined]
    return group._loop  # type: ignore[no-any-return]


async def test_a_task_over_its_time_limit_fails_with_timeout() -> None:
    with gateway(None, task_timeout=0.3, echo_token_delay_ms=50) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post("/api/tasks", json={"query": echo_query(100), "agentType": 0})
            with anyio.fail_after(10):
                events = (await read_sse(client, f"/api/tasks/{r.json()['taskId']}/events")).events
    assert events[-1]["messageType"] == "error" and events[-1]["error"]["code"] == "timeout"
    assert any(e["messageType"] == "agent_stream" for e in events)


async def test_a_handler_failure_ends_the_task_failed_with_its_code_and_partial_output() -> None:
    registry = TaskRegistry()
    completed: list[TaskRecord] = []
    failed: list[TaskRecord] = []

    async def breaks(ctx: TaskContext) -> None:
        await ctx.printer.stream("agent_stream").delta("partial ")
        raise TaskFailure("upstream_error", "the model went away")

    async def on_failure(record: TaskRecord) -> None:
        failed.append(record)

    async def on_complete(record: TaskRecord) -> None:
        completed.append(record)

    registry.register(4, breaks, on_complete=on_complete, on_failure=on_failure)
    with gateway(None, registry=registry) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post("/api/tasks", json={"query": "x", "agentType": 4})
            task_id = r.json()["taskId"]
            with anyio.fail_after(10):
                events = (await read_sse(client, f"/api/tasks/{task_id}/events")).events
            snap = (await client.get(f"/api/tasks/{task_id}")).json()
    assert [e["messageType"] for e in events] == ["status", "agent_stream", "error"]
    assert events[-1]["error"] == {"code": "upstream_error", "message": "the model went away"}
    assert snap["status"] == "FAILED" and snap["result"] == "partial "
    assert [r.task_id for r in failed] == [task_id] and completed == []


async def test_listing_filters_by_status_and_pages_with_a_cursor(store_url: str | None) -> None:
    with gateway(store_url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            ids = []
            for i in range(5):
                r = await client.post("/api/tasks", json={"query": f"q{i}", "agentType": 0})
                ids.append(r.json()["taskId"])
            with anyio.fail_after(10):
                for task_id in ids:
                    await read_sse(client, f"/api/tasks/{task_id}/events")
            batch = await client.get("/api/tasks", params={"ids": f"{ids[0]},nope,{ids[3]}"})
            seen: list[str] = []
            cursor = None
            for _ in range(100):
                params = {
                    "status": "COMPLETED",
                    "limit": "2",
                    **({"cursor": cursor} if cursor else {}),
                }
                page = (await client.get("/api/tasks", params=params)).json()
                assert all(t["status"] == "COMPLETED" for t in page["tasks"])
                seen += [t["taskId"] for t in page["tasks"]]
                cursor = page["nextCursor"]
                if cursor is None:
                    break
    assert [t["taskId"] for t in batch.json()["tasks"]] == [ids[0], ids[3]]
    assert batch.json()["missing"] == ["nope"]
    assert [t for t in seen if t in ids] == list(reversed(ids))


_JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/api/tasks", {"content": b"{not json", "headers": _JSON}, 400, "invalid_json"),
        ("POST", "/api/tasks", {"content": b"", "headers": _JSON}, 400, "invalid_json"),
        ("POST", "/api/tasks", {"content": b'{"query": "x"}'}, 415, "unsupported_media_type"),
        ("POST", "/api/tasks", {"json": {"query": 5}}, 422, "invalid_request"),
        (
            "POST",
            "/api/tasks",
            {"json": {"query": "x", "agentType": "three"}},
            422,
            "invalid_request",
        ),
        ("POST", "/api/tasks", {"json": {"query": "x", "agentType": 42}}, 422, "invalid_request"),
        ("POST", "/api/tasks", {"json": {"query": ""}}, 422, "invalid_request"),
        ("POST", "/api/tasks", {"json": ["query"]}, 422, "invalid_request"),
        ("POST", "/api/tasks", {"json": {"query": "x", "surprise": 1}}, 422, "invalid_request"),
        (
            "POST",
            "/api/tasks",
            {"content": b'{"query":"' + b"a" * 1_100_000 + b'"}'},
            413,
            "body_too_large",
        ),
        ("GET", "/api/tasks/unknown", {}, 404, "not_found"),
        ("GET", "/api/tasks/unknown/events", {}, 404, "not_found"),
        ("POST", "/api/tasks/unknown/cancel", {}, 404, "not_found"),
        ("GET", "/api/tasks?status=DONE", {}, 400, "bad_request"),
        ("GET", "/api/tasks?limit=0", {}, 400, "bad_request"),
        ("GET", "/api/tasks?cursor=%%%", {}, 400, "invalid_cursor"),
        ("GET", "/api/tasks?ids=", {}, 400, "bad_request"),
        ("DELETE", "/api/tasks", {}, 405, "method_not_allowed"),
        ("GET", "/nowhere", {}, 404, "not_found"),
    ],
)
async def test_bad_input_gets_a_clear_4xx_json_error(
    method: str, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    with gateway(None) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize(
    ("header", "query"), [("abc", None), ("-1", None), (None, "x1"), ("999", None)]
)
async def test_a_bad_cursor_gets_400(header: str | None, query: str | None) -> None:
    with gateway(None) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post("/api/tasks", json={"query": "a b", "agentType": 0})
            task_id = r.json()["taskId"]
            with anyio.fail_after(10):
                await read_sse(client, f"/api/tasks/{task_id}/events")
            headers = {"Last-Event-ID": header} if header else {}
            params = {"after": query} if query else {}
            bad = await client.get(f"/api/tasks/{task_id}/events", headers=headers, params=params)
            poll = await client.get(f"/api/tasks/{task_id}", params={"after": header or query})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"
    assert poll.status_code == 400


async def test_health_readiness_and_metrics() -> None:
    with gateway(None) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post("/api/tasks", json={"query": "a b c", "agentType": 0})
            with anyio.fail_after(10):
                await read_sse(client, f"/api/tasks/{r.json()['taskId']}/events")
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
    assert health.status_code == 200 and ready.status_code == 200
    assert 'agw_tasks{status="COMPLETED"} 1.0' in metrics
    assert "agw_messages_appended_total 10.0" in metrics
    assert "agw_active_streams 0.0" in metrics
    assert "agw_queue_depth 0.0" in metrics


async def test_readyz_and_the_api_answer_503_when_redis_is_unreachable() -> None:
    from tests.helpers import free_port

    with gateway(f"redis://127.0.0.1:{free_port()}/0") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.get("/readyz")
            submitted = await client.post("/api/tasks", json={"query": "q", "agentType": 0})
            polled = await client.get(f"/api/tasks/{new_task_id()}")
            health = await client.get("/healthz")  # the same connection still serves
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    for answer in (submitted, polled):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "store_unavailable"
        assert int(answer.headers["retry-after"]) >= 1
    assert health.status_code == 200


def test_a_task_submitted_to_one_gateway_process_streams_completely_from_another(
    redis_url: str,
) -> None:
    env = {"REDIS_URL": redis_url, "ECHO_TOKEN_DELAY_MS": "5", "REDIS_PREFIX": new_task_id()}
    with spawn_service("gateway", env) as a, spawn_service("gateway", env) as b:
        r = httpx.post(f"{a}/api/tasks", json={"query": echo_query(80), "agentType": 0})
        task_id = r.json()["taskId"]

        async def read_from_b() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(base_url=b, timeout=30) as client:
                with anyio.fail_after(30):
                    return (await read_sse(client, f"/api/tasks/{task_id}/events")).events

        events = anyio.run(read_from_b)
        snap = httpx.get(f"{b}/api/tasks/{task_id}").json()
    # All of it: in order, to the end, the answer whole (a replay may skip finished deltas).
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 80 + 7
    answers = [v for kind, v in merged(events).values() if kind == "agent_stream"]
    assert answers == [echo_query(80)]
    assert snap["status"] == "COMPLETED" and snap["result"] == echo_query(80)


def test_settings_refuse_bad_environment_values() -> None:
    from gateway.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="MAX_RUNNING"):
        Settings.from_env({"MAX_RUNNING": "many"})
    settings = Settings.from_env({"REDIS_URL": "redis://secret@h/0", "MAX_QUEUED": "3"})
    assert settings.max_queued == 3 and "secret" not in repr(settings)
    assert dataclasses.replace(settings, port=1).port == 1
