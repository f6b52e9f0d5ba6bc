"""The A2A surface, driven by the SDK's own client: one A2A task is one of our tasks."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

import anyio
import httpx
import orjson
import pytest
from a2a.client import ClientCallContext
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from google.protobuf.json_format import MessageToDict

from gateway.security import SecuritySettings, parse_api_keys
from gateway.store import MemoryStore, StoreUnavailable
from gateway.webhooks import WebhookSettings
from tests.gateway.a2a.support import VERSION, receiver, rpc, sdk_client, send_request, sent_task
from tests.gateway.support import echo_query, gateway, read_sse

pytestmark = pytest.mark.anyio

SECRET = b"a2a-push-secret"


def seq_of(event: StreamResponse) -> int | None:
    """The log seq an event carries in its metadata (``None`` on all but a message's last)."""
    kind = event.WhichOneof("payload")
    metadata = getattr(event, kind).metadata
    return int(metadata["seq"]) if "seq" in metadata else None


def keyed(**overrides: Any) -> dict[str, Any]:
    keys = parse_api_keys("alice:key-a,bob:key-b")
    return {"security": dataclasses.replace(SecuritySettings(), api_keys=keys), **overrides}


async def test_the_card_is_open_and_names_the_endpoint_streaming_push_and_agents_as_skills() -> (
    None
):
    with gateway(**keyed()) as server:
        async with httpx.AsyncClient() as http:
            card = (await http.get(server.url + "/.well-known/agent-card.json")).json()
            refused = await http.post(server.url + "/a2a", json={}, headers=VERSION)
    assert card["supportedInterfaces"] == [
        {"url": server.url + "/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
    ]
    assert card["capabilities"] == {"streaming": True, "pushNotifications": True}
    assert {"echo", "react", "plan_and_execute"} <= {s["id"] for s in card["skills"]}
    assert "bearer" in card["securitySchemes"]
    assert refused.status_code == 401  # the endpoint itself needs a key


async def test_send_message_blocks_until_the_answer_and_get_task_folds_the_log() -> None:
    with gateway() as server:
        async with sdk_client(server.url, streaming=False) as (client, _):
            events = [e async for e in client.send_message(send_request("one two three"))]
            task = events[0].task
            again = await client.get_task(GetTaskRequest(id=task.id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in task.artifacts] == ["one two three"]
    assert task.history[0].parts[0].text == "one two three"
    assert again == task


async def test_a_task_dropped_mid_answer_resumes_on_the_other_replica_with_every_event_once(
    redis_url: str,
) -> None:
    shared = {"redis_prefix": f"agw-a2a-{secrets.token_hex(4)}", "echo_token_delay_ms": 40.0}
    query = echo_query(30)
    with gateway(redis_url, **shared) as first, gateway(redis_url, **shared) as second:
        before: list[StreamResponse] = []
        async with sdk_client(first.url) as (client, _):
            async for event in client.send_message(send_request(query)):
                before.append(event)
                if sum(e.HasField("artifact_update") for e in before) == 5:
                    break  # drop the connection mid-answer
        task_id = before[0].task.id
        last = max(s for s in map(seq_of, before) if s is not None)
        after: list[StreamResponse] = []
        resume = ClientCallContext(service_parameters={"Last-Event-ID": str(last)})
        async with sdk_client(second.url) as (client, _):
            with anyio.fail_after(20):
                async for event in client.subscribe(
                    SubscribeToTaskRequest(id=task_id), context=resume
                ):
                    after.append(event)
        async with sdk_client(second.url) as (client, _):
            whole = [
                e
                async for e in client.subscribe(
                    SubscribeToTaskRequest(id=task_id),
                    context=ClientCallContext(service_parameters={"Last-Event-ID": "0"}),
                )
            ]
    assert after[0].HasField("task") and seq_of(after[0]) == last
    updates = [MessageToDict(e) for e in before[1:] + after[1:]]
    assert updates == [MessageToDict(e) for e in whole[1:]]  # nothing missing, nothing twice
    chunks = [e.artifact_update for e in before + after if e.HasField("artifact_update")]
    assert "".join(c.artifact.parts[0].text for c in chunks if not c.last_chunk) == query
    assert after[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_sse_frames_carry_the_log_seq_as_id_and_last_event_id_resumes_exactly() -> None:
    with gateway(echo_token_delay_ms=1.0) as server:
        async with httpx.AsyncClient(timeout=30) as http:
            params = MessageToDict(send_request("a b c d"))
            body = {"jsonrpc": "2.0", "id": 7, "method": "SendStreamingMessage", "params": params}
            full = await read_sse(
                http, server.url + "/a2a", method="POST", json=body, headers=VERSION
            )
            task_id = full.events[0]["result"]["task"]["id"]
            ids = [int(i) for i in full.ids if i]
            sub = {
                "jsonrpc": "2.0",
                "id": 8,
                "method": "SubscribeToTask",
                "params": {"id": task_id},
            }
            cut = ids[len(ids) // 2]
            tail = await read_sse(
                http,
                server.url + "/a2a",
                method="POST",
                json=sub,
                headers={**VERSION, "Last-Event-ID": str(cut)},
            )
            native = (await http.get(f"{server.url}/api/tasks/{task_id}")).json()
    assert full.headers["content-type"].startswith("text/event-stream")
    assert ids == sorted(set(ids)) and ids[-1] == native["lastSeq"]
    position = full.ids.index(str(cut))
    assert [e["result"] for e in tail.events[1:]] == [
        e["result"] for e in full.events[position + 1 :]
    ]
    assert tail.events[0]["result"]["task"]["metadata"]["seq"] == cut


async def test_cancel_from_a2a_is_confirmed_on_the_native_api() -> None:
    with gateway(echo_token_delay_ms=200.0) as server:
        async with sdk_client(server.url, streaming=False) as (client, http):
            events = [
                e async for e in client.send_message(send_request(echo_query(50), immediately=True))
            ]
            task_id = events[0].task.id
            cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
            native = (await http.get(f"{server.url}/api/tasks/{task_id}")).json()
            with pytest.raises(TaskNotCancelableError):  # a second cancel: it has ended
                await client.cancel_task(CancelTaskRequest(id=task_id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert native["status"] == "CANCELLED"


async def test_a_push_notification_arrives_signed_with_the_task_and_its_token() -> None:
    hooks = WebhookSettings(secret=SECRET, allow_hosts=("127.0.0.1",), poll_interval=0.05)
    with receiver() as hook, gateway(webhooks=hooks) as server:
        async with sdk_client(server.url, streaming=False) as (client, _):
            events = [e async for e in client.send_message(send_request("x y", immediately=True))]
            task_id = events[0].task.id
            config = TaskPushNotificationConfig(task_id=task_id, url=hook.url, token="tok-1")
            made = await client.create_task_push_notification_config(config)
            headers, body = await hook.wait()
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(SECRET, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == "v1," + expected
    assert headers["x-a2a-notification-token"] == "tok-1"
    task = orjson.loads(body)["task"]
    assert (task["id"], task["status"]["state"]) == (task_id, "TASK_STATE_COMPLETED")
    assert made.id and made.task_id == task_id


class _NoWritesAfterCreate(MemoryStore):
    """A store that fails every note and enrollment made after a task's create: what a crash
    (or a store error) right after the create leaves of whatever was to be written then."""

    def __init__(self) -> None:
        super().__init__()
        self.outbox.enroll = self._down  # type: ignore[method-assign]

    async def _down(self, *args: Any) -> Any:
        raise StoreUnavailable("down after the create")

    async def annotate(self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int) -> None:
        await self._down()


async def test_a_push_config_sent_with_a_message_is_delivered_though_the_store_fails_after() -> (
    None
):
    hooks = WebhookSettings(secret=SECRET, allow_hosts=("127.0.0.1",), poll_interval=0.05)
    with receiver() as hook, gateway(store=_NoWritesAfterCreate(), webhooks=hooks) as server:
        async with sdk_client(server.url, streaming=False) as (client, _):
            request = send_request("x y", context_id="ctx-push")
            config = request.configuration.task_push_notification_config
            config.CopyFrom(TaskPushNotificationConfig(url=hook.url, token="tok-2"))
            task = await sent_task(client, request)
            headers, body = await hook.wait()
            listed = await client.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert (task.context_id, task.history[0].parts[0].text) == ("ctx-push", "x y")
    assert headers["x-a2a-notification-token"] == "tok-2"
    assert orjson.loads(body)["task"]["id"] == task.id
    assert [(c.task_id, c.url, c.token) for c in listed.configs] == [(task.id, hook.url, "tok-2")]


async def test_a_push_url_on_a_private_address_is_refused() -> None:
    with gateway() as server:
        async with sdk_client(server.url, streaming=False) as (client, _):
            events = [e async for e in client.send_message(send_request("x"))]
            config = TaskPushNotificationConfig(
                task_id=events[0].task.id, url="http://127.0.0.1:9/"
            )
            with pytest.raises(InvalidParamsError):
                await client.create_task_push_notification_config(config)


async def test_another_keys_task_is_not_found_and_not_listed() -> None:
    with gateway(**keyed()) as server:
        async with (
            sdk_client(server.url, streaming=False, headers={"Authorization": "Bearer key-a"}) as (
                alice,
                _,
            ),
            sdk_client(server.url, headers={"Authorization": "Bearer key-b"}) as (bob, http),
        ):
            events = [e async for e in alice.send_message(send_request("mine"))]
            task_id = events[0].task.id
            with pytest.raises(TaskNotFoundError):
                await bob.get_task(GetTaskRequest(id=task_id))
            with pytest.raises(TaskNotFoundError):
                await bob.cancel_task(CancelTaskRequest(id=task_id))
            listed = await rpc(http, server.url, "ListTasks", {})
    assert listed["result"]["tasks"] == [] and listed["result"]["totalSize"] == 0


async def test_list_tasks_filters_by_context_and_pages_with_an_exact_total() -> None:
    with gateway() as server:
        async with sdk_client(server.url, streaming=False) as (client, http):
            for text in ("a", "b", "c"):
                request = send_request(text, context_id="ctx-1")
                [e async for e in client.send_message(request)]
            [e async for e in client.send_message(send_request("other"))]
            first = await rpc(http, server.url, "ListTasks", {"contextId": "ctx-1", "pageSize": 2})
            token = first["result"]["nextPageToken"]
            second = await rpc(
                http,
                server.url,
                "ListTasks",
                {"contextId": "ctx-1", "pageSize": 2, "pageToken": token},
            )
    pages = first["result"]["tasks"] + second["result"]["tasks"]
    assert [t["history"][0]["parts"][0]["text"] for t in pages] == ["c", "b", "a"]
    assert first["result"]["totalSize"] == 3 and second["result"]["nextPageToken"] == ""


async def test_a_message_for_an_ended_task_and_a_subscription_to_it_are_refused() -> None:
    with gateway() as server:
        async with sdk_client(server.url) as (client, _):
            events = [e async for e in client.send_message(send_request("done"))]
            task_id = events[0].task.id
            with pytest.raises(UnsupportedOperationError):
                [e async for e in client.send_message(send_request("more", task_id=task_id))]
            with pytest.raises(UnsupportedOperationError):
                [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]


async def test_list_tasks_refuses_a_status_that_is_no_task_state() -> None:
    with gateway() as server:
        async with httpx.AsyncClient(timeout=30) as http:
            refused = await rpc(http, server.url, "ListTasks", {"status": "TASK_STATE_BOGUS"})
            accepted = await rpc(http, server.url, "ListTasks", {"status": "TASK_STATE_WORKING"})
    assert refused["error"]["code"] == -32602
    assert accepted["result"]["tasks"] == []


async def test_a_stream_older_than_sse_max_age_ends_early_and_resumes_exactly() -> None:
    with gateway(echo_token_delay_ms=50.0, sse_max_age=0.3) as server:
        async with httpx.AsyncClient(timeout=30) as http:
            params = MessageToDict(send_request(echo_query(30)))
            body = {"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": params}
            cut = await read_sse(
                http, server.url + "/a2a", method="POST", json=body, headers=VERSION
            )
            task_id = cut.events[0]["result"]["task"]["id"]
            last = [i for i in cut.ids if i][-1]
            sub = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "SubscribeToTask",
                "params": {"id": task_id},
            }
            rest: list[dict[str, Any]] = []
            for _ in range(50):  # each connection lives 0.3 s: resume until the task's end
                more = await read_sse(
                    http,
                    server.url + "/a2a",
                    method="POST",
                    json=sub,
                    headers={**VERSION, "Last-Event-ID": last},
                )
                rest += more.events[1:]
                last = next((i for i in reversed(more.ids) if i), last)
                if rest and "statusUpdate" in rest[-1]["result"]:
                    if (
                        rest[-1]["result"]["statusUpdate"]["status"]["state"]
                        == "TASK_STATE_COMPLETED"
                    ):
                        break
    streamed = cut.events[1:] + rest
    chunks = [e["result"]["artifactUpdate"] for e in streamed if "artifactUpdate" in e["result"]]
    assert "".join(c["artifact"]["parts"][0]["text"] for c in chunks if not c.get("lastChunk")) == (
        echo_query(30)
    )
    assert cut.events[-1]["result"].get("statusUpdate", {}).get("status", {}).get("state") != (
        "TASK_STATE_COMPLETED"
    )  # the first connection really ended before the task did


async def test_a_retried_message_is_the_same_task_and_a_reused_message_id_is_refused() -> None:
    with gateway() as server:
        async with sdk_client(server.url, streaming=False) as (client, _):
            request = send_request("once only", immediately=True)
            first = await sent_task(client, request)
            again = await sent_task(client, request)
            reused = send_request("something else")
            reused.message.message_id = request.message.message_id
            with pytest.raises(InvalidParamsError):
                [e async for e in client.send_message(reused)]
            missing = send_request("no id")
            missing.message.message_id = ""
            with pytest.raises(InvalidParamsError):
                [e async for e in client.send_message(missing)]
    assert (again.id, again.context_id) == (first.id, first.context_id)
