"""Inputs that used to break the API: non-ASCII digits, lax types, non-JSON bodies, the
snake_case callback URL, and a receiver's unreadable ``Retry-After``. Each gets a 4xx with
``{"error": {"code", "message"}}`` (or, for the receiver, a delivery that carries on)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.protocol import parse_decimal
from gateway.settings import Settings
from gateway.webhooks import WebhookSettings
from tests.gateway.support import INTAKE_WAIT, gateway, read_sse
from tests.helpers import ThreadedServer, client_of, serve_app

pytestmark = pytest.mark.anyio

ECHO = {"query": "a b c", "agentType": 0}
UNICODE_DIGITS = ["%C2%B2", "%D9%A3", "%EF%BC%95", "1%C2%B9", "9" * 5000]
"""``²``, Arabic-Indic ``٣``, fullwidth five, ``1¹``, and more digits than ``int()`` reads."""


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, (answer.request.url, answer.text[:200])
    error = answer.json()["error"]
    assert error["code"] == code and error["message"], error


async def finished_task(client: httpx.AsyncClient) -> str:
    task_id: str = (await client.post("/api/tasks", json=ECHO)).json()["taskId"]
    with anyio.fail_after(10):
        await read_sse(client, f"/api/tasks/{task_id}/events")
    return task_id


# -- numbers ------------------------------------------------------------------------------------
def test_only_ascii_digits_are_read_as_numbers() -> None:
    assert [parse_decimal(t) for t in ("0", "007", "42", "9" * 18)] == [0, 7, 42, 10**18 - 1]
    refused = ["", " 1", "1 ", "+1", "-1", "1_0", "1.0", "²", "٣", "\uff15", "1¹", "9" * 19, None]
    assert [parse_decimal(t) for t in refused] == [None] * len(refused)


async def test_a_unicode_digit_in_any_cursor_or_limit_is_a_400_not_a_500() -> None:
    with gateway(echo_token_delay_ms=0.0) as server:
        async with client_of(server) as client:
            task_id = await finished_task(client)
            answers = []
            for digits in UNICODE_DIGITS:
                answers += [
                    (await client.get(f"/api/tasks/{task_id}?after={digits}"), "invalid_cursor"),
                    (await client.get(f"/api/tasks/{task_id}?after=0&limit={digits}"), None),
                    (await client.get(f"/api/tasks?limit={digits}"), "bad_request"),
                    (await client.get(f"/api/tasks?cursor={digits}"), "invalid_cursor"),
                    (
                        await client.get(f"/api/tasks/{task_id}/events?after={digits}"),
                        "invalid_cursor",
                    ),
                ]
            # A header arrives as Latin-1: the byte B2 is "²", B9 "¹".
            for raw in (b"\xb2", b"1\xb9", b"\xb3\xb2"):
                headers = {"Last-Event-ID": raw}
                events = await client.get(f"/api/tasks/{task_id}/events", headers=headers)
                answers.append((events, "invalid_cursor"))
            still_fine = await client.get(f"/api/tasks/{task_id}?after=1&limit=2")
    for answer, code in answers:
        assert_error(answer, 400, code or "bad_request")
    assert still_fine.status_code == 200 and len(still_fine.json()["messages"]) == 2


# -- agentType ----------------------------------------------------------------------------------
async def test_agent_type_must_be_a_json_integer() -> None:
    with gateway(echo_token_delay_ms=0.0) as server:
        async with client_of(server) as client:
            refused = [
                await client.post("/api/tasks", json={"query": "q", "agentType": value})
                for value in (True, False, "0", "5", 0.0, 5.0, [5], None)
            ]
            accepted = await client.post("/api/tasks", json={"query": "q", "agentType": 0})
            refused += [
                await client.post("/AutoAgent", json={"query": "q", "agentType": value})
                for value in (True, "0", 0.0)
            ]
            listed = (await client.get("/api/tasks", params={"limit": 50})).json()["tasks"]
    for answer in refused:
        assert_error(answer, 422, "invalid_request")
        assert "agentType" in answer.json()["error"]["message"]
    assert accepted.status_code == 202
    assert [t["taskId"] for t in listed] == [accepted.json()["taskId"]]


# -- Content-Type -------------------------------------------------------------------------------
async def test_a_task_is_only_created_from_a_body_declared_as_json() -> None:
    body = orjson.dumps(ECHO)
    with gateway(echo_token_delay_ms=0.0) as server:
        async with client_of(server) as client:
            refused = []
            for content_type in (
                "text/plain",
                "text/plain; charset=utf-8",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonx",
                "text/json",
                None,
            ):
                headers = {"Content-Type": content_type} if content_type else {}
                refused.append(await client.post("/api/tasks", content=body, headers=headers))
            stream_headers = {"Content-Type": "text/plain", "Accept": "text/event-stream"}
            refused.append(await client.post("/api/tasks", content=body, headers=stream_headers))
            for path in ("/AutoAgent", "/web/api/v1/gpt/queryAgentStreamIncr"):
                refused.append(
                    await client.post(path, content=body, headers={"Content-Type": "text/plain"})
                )
            listed = (await client.get("/api/tasks")).json()["tasks"]
            accepted = [
                await client.post("/api/tasks", content=body, headers={"Content-Type": kind})
                for kind in (
                    "application/json",
                    "Application/JSON; charset=UTF-8",
                    "application/vnd.example+json",
                )
            ]
    for answer in refused:
        assert_error(answer, 415, "unsupported_media_type")
    assert listed == []
    assert [a.status_code for a in accepted] == [202, 202, 202]


# -- callback_url -------------------------------------------------------------------------------
@dataclasses.dataclass
class Receiver:
    """A webhook endpoint answering ``answers`` (status, headers) in turn, then 200."""

    answers: list[tuple[int, list[tuple[bytes, bytes]]]]
    calls: list[bytes] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.calls.append(body)
            status, headers = self.answers.pop(0) if self.answers else (200, [])
        response = Response(status_code=status)
        response.raw_headers.extend(headers)
        return response


@contextlib.contextmanager
def receiving(
    answers: Sequence[tuple[int, list[tuple[bytes, bytes]]]] = (),
) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver(list(answers))
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    with serve_app(app) as server:
        yield receiver, f"{server.url}/hook"


@contextlib.contextmanager
def hooked(allow_hosts: tuple[str, ...]) -> Iterator[ThreadedServer]:
    """A gateway whose webhooks may reach ``allow_hosts`` (and public addresses)."""
    webhooks = WebhookSettings(allow_hosts=allow_hosts, backoff=0.05, poll_interval=0.05)
    settings = dataclasses.replace(
        Settings.from_env({}), echo_token_delay_ms=0.0, intake_wait=INTAKE_WAIT, webhooks=webhooks
    )
    with serve_app(create_app(settings)) as server:
        yield server


async def settled(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """Poll the delivery record until it is delivered or failed (bounded)."""
    with anyio.fail_after(15):
        while True:
            answer = await client.get(f"/api/tasks/{task_id}/webhook")
            record: dict[str, Any] = answer.json()
            if record.get("status") in ("delivered", "failed"):
                return record
            await anyio.sleep(0.05)


async def test_a_snake_case_callback_url_is_checked_like_the_camel_case_one() -> None:
    with hooked(allow_hosts=()) as server:
        async with client_of(server) as client:
            answers = [
                await client.post("/api/tasks", json={**ECHO, name: "http://127.0.0.1:9/hook"})
                for name in ("callback_url", "callbackUrl")
            ]
            listed = (await client.get("/api/tasks")).json()["tasks"]
    for answer in answers:
        assert_error(answer, 422, "invalid_request")
        assert "non-public address (127.0.0.1)" in answer.json()["error"]["message"]
    assert listed == []


async def test_a_snake_case_callback_url_gets_its_webhook() -> None:
    with receiving() as (receiver, url), hooked(allow_hosts=("127.0.0.1",)) as server:
        async with client_of(server) as client:
            created = await client.post("/api/tasks", json={**ECHO, "callback_url": url})
            task_id = created.json()["taskId"]
            record = await settled(client, task_id)
    assert created.status_code == 202
    assert record["status"] == "delivered" and record["callbackUrl"] == url
    assert [orjson.loads(c)["data"]["taskId"] for c in receiver.calls] == [task_id]


async def test_a_retry_after_that_is_not_ascii_digits_keeps_the_default_back_off() -> None:
    unreadable = [(b"retry-after", b"\xb2")]  # "²" in Latin-1
    answers = [(503, unreadable), (429, [(b"retry-after", "٣".encode())])]
    with receiving(answers) as (receiver, url), hooked(allow_hosts=("127.0.0.1",)) as server:
        async with client_of(server) as client:
            created = await client.post("/api/tasks", json={**ECHO, "callbackUrl": url})
            record = await settled(client, created.json()["taskId"])
    assert record["status"] == "delivered"
    assert record["attempts"] == 3 and record["lastStatus"] == 200
    assert len(receiver.calls) == 3
