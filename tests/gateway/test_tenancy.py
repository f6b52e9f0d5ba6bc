"""Submissions scoped by API key: compat ``requestId``s, ``Idempotency-Key``s and owners.

With ``API_KEYS`` set, the key that names a task (an ``Idempotency-Key`` or a JoyAgent
``requestId``) belongs to the caller's key name: another key sending the same one gets a task of
its own, never the first caller's stream, and the first caller keeps its task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import orjson
import pytest

from gateway.agents.echo import make_echo_agent
from gateway.app import create_app
from gateway.security import SecuritySettings, install_security, parse_api_keys
from gateway.settings import Settings
from gateway.tasks import TaskRegistry
from tests.gateway.support import INTAKE_WAIT
from tests.helpers import ThreadedServer, client_of, serve_app

pytestmark = pytest.mark.anyio

ALICE = {"Authorization": "Bearer ka"}
BOB = {"Authorization": "Bearer kb"}
GPT = "/web/api/v1/gpt/queryAgentStreamIncr"


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def echo_everywhere(delay_ms: float) -> TaskRegistry:
    """Echo as every agent type the compat endpoints use (0, 3, 5): no LLM needed."""
    registry = TaskRegistry()
    echo = make_echo_agent(delay_ms)
    for agent_type in (0, 3, 5):
        registry.register(agent_type, echo, name="echo")
    return registry


@contextlib.contextmanager
def gateway(
    api_keys: str = "alice:ka,bob:kb", redis_url: str | None = None, delay_ms: float = 0.0
) -> Iterator[ThreadedServer]:
    settings = dataclasses.replace(
        Settings.from_env({}),
        redis_url=redis_url,
        redis_prefix=f"agw-test-{secrets.token_hex(4)}",
        intake_wait=INTAKE_WAIT,
    )
    app = create_app(settings, registry=echo_everywhere(delay_ms))
    install_security(app, SecuritySettings(api_keys=parse_api_keys(api_keys)))
    with serve_app(app) as server:
        yield server


async def compat_frames(response: httpx.Response, stop_after: int | None = None) -> list[Any]:
    """The JSON frames (``data:<json>``) of a compat stream, heartbeats left out."""
    frames: list[Any] = []
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            data = block.removeprefix(b"data:")
            if data and data != b"heartbeat":
                frames.append(orjson.loads(data))
        if stop_after is not None and len(frames) >= stop_after:
            break
    return frames


async def read_compat(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[str, list[Any]]:
    """POST a compat request and read its stream to the end: (task id, frames)."""
    async with client.stream("POST", path, json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return response.headers["x-task-id"], await compat_frames(response)


@pytest.mark.parametrize("path", [GPT, "/AutoAgent"])
async def test_another_key_with_the_same_request_id_gets_its_own_run_never_the_first(
    store_url: str | None, path: str
) -> None:
    alice_body = {"query": "alice secret plans here", "requestId": "req-shared", "agentType": 5}
    bob_body = {"query": "bob question", "requestId": "req-shared", "agentType": 5}
    with gateway(redis_url=store_url, delay_ms=30) as server:
        async with client_of(server) as client:
            with anyio.fail_after(20):
                async with client.stream("POST", path, json=alice_body, headers=ALICE) as first:
                    alice_id = first.headers["x-task-id"]
                    await compat_frames(first, stop_after=1)  # Alice's run is under way
                    bob_id, bob_frames = await read_compat(client, path, bob_body, BOB)
                again_id, alice_frames = await read_compat(client, path, alice_body, ALICE)
            alice_task = await client.get(f"/api/tasks/{alice_id}", headers=ALICE)
            bob_task = await client.get(f"/api/tasks/{bob_id}", headers=BOB)
            bob_on_alice = await client.get(f"/api/tasks/{alice_id}", headers=BOB)
            alice_on_bob = await client.get(f"/api/tasks/{bob_id}", headers=ALICE)

    assert bob_id != alice_id
    assert bob_frames and b"secret" not in orjson.dumps(bob_frames)
    assert b"bob question" in orjson.dumps(bob_frames)
    assert again_id == alice_id  # Alice's retry still joins her own run
    assert b"alice secret plans here" in orjson.dumps(alice_frames)
    assert alice_task.status_code == 200 and alice_task.json()["result"] == alice_body["query"]
    assert bob_task.status_code == 200 and bob_task.json()["result"] == bob_body["query"]
    for refused in (bob_on_alice, alice_on_bob):
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"


async def test_another_key_with_the_same_idempotency_key_gets_its_own_task(
    store_url: str | None,
) -> None:
    key = {"Idempotency-Key": "order-42"}
    with gateway(redis_url=store_url) as server:
        async with client_of(server) as client:
            alice = await client.post(
                "/api/tasks", json={"query": "alice", "agentType": 0}, headers={**ALICE, **key}
            )
            bob = await client.post(
                "/api/tasks", json={"query": "bob", "agentType": 0}, headers={**BOB, **key}
            )
            alice_id, bob_id = alice.json()["taskId"], bob.json()["taskId"]
            alice_task = await client.get(f"/api/tasks/{alice_id}", headers=ALICE)
            bob_on_alice = await client.get(f"/api/tasks/{alice_id}", headers=BOB)
            alice_list = (await client.get("/api/tasks", headers=ALICE)).json()
            bob_list = (await client.get("/api/tasks", headers=BOB)).json()
    assert alice.status_code == bob.status_code == 202
    assert alice_id != bob_id
    assert alice_task.status_code == 200 and alice_task.json()["taskId"] == alice_id
    assert bob_on_alice.status_code == 404
    assert [t["taskId"] for t in alice_list["tasks"]] == [alice_id]
    assert [t["taskId"] for t in bob_list["tasks"]] == [bob_id]


async def test_an_idempotency_key_reused_for_a_different_body_is_refused_with_422(
    store_url: str | None,
) -> None:
    key = {"Idempotency-Key": "pay-once", "Content-Type": "application/json"}
    with gateway(redis_url=store_url) as server:
        async with client_of(server) as client:
            first = await client.post(
                "/api/tasks", content=b'{"query": "a b", "agentType": 0}', headers={**ALICE, **key}
            )
            # The same request: other key order, spacing, a default spelled out.
            same = await client.post(
                "/api/tasks",
                content=b'{"agentType":0,"cancelOnDisconnect":false,"query":"a b"}',
                headers={**ALICE, **key},
            )
            different = await client.post(
                "/api/tasks", json={"query": "a c", "agentType": 0}, headers={**ALICE, **key}
            )
            listed = await client.get("/api/tasks", headers=ALICE)
    assert first.status_code == same.status_code == 202
    assert same.json()["taskId"] == first.json()["taskId"]
    assert different.status_code == 422
    error = different.json()["error"]
    assert error["code"] == "idempotency_key_reused" and "Idempotency-Key" in error["message"]
    assert [t["taskId"] for t in listed.json()["tasks"]] == [first.json()["taskId"]]


async def test_a_compat_request_id_reused_for_another_query_is_refused_without_auth() -> None:
    with gateway(api_keys="") as server:
        async with client_of(server) as client:
            with anyio.fail_after(20):
                first_id, _ = await read_compat(
                    client, "/AutoAgent", {"query": "one", "requestId": "r-1"}, {}
                )
                again_id, _ = await read_compat(
                    client, "/AutoAgent", {"query": "one", "requestId": "r-1"}, {}
                )
            other = await client.post("/AutoAgent", json={"query": "two", "requestId": "r-1"})
    assert again_id == first_id
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert "requestId" in other.json()["error"]["message"]
