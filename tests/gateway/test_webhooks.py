"""Webhooks: signed, retried, recorded, sent for every way a task ends, and SSRF-guarded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
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
from gateway.settings import Settings
from gateway.tasks import TaskContext, TaskFailure, TaskRegistry
from gateway.webhooks import (
    TargetPolicy,
    WebhookSettings,
    check_target,
    install_webhooks,
    parse_secret,
    sign,
)
from tests.gateway.support import INTAKE_WAIT
from tests.helpers import ThreadedServer, client_of, serve_app

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"a test secret of thirty-two byte").decode()


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


# -- a receiver and a gateway ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Call:
    at: float
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook endpoint answering ``statuses`` in turn (then 200), recording every call."""

    def __init__(self, statuses: Sequence[int] = ()) -> None:
        self.statuses = list(statuses)
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.calls.append(Call(time.monotonic(), dict(request.headers), body))
            status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status)


@contextlib.contextmanager
def receiving(statuses: Sequence[int] = ()) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver(statuses)
    with serve_app(receiver.app) as server:
        yield receiver, f"{server.url}/hook"


class FakeDNS:
    """A resolver answering from a table; a list of answers is consumed one per lookup."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table

    async def __call__(self, host: str, port: int) -> list[str]:
        answer = self.table.get(host)
        if answer is None:
            raise OSError(f"{host}: name does not resolve")
        if isinstance(answer[0], list):
            return list(answer.pop(0) if len(answer) > 1 else answer[0])
        return list(answer)


def _stuck_agent(loops: list[asyncio.AbstractEventLoop]) -> Any:
    async def stuck(ctx: TaskContext) -> None:
        loops.append(asyncio.get_running_loop())
        await ctx.printer.send("task", "waiting")
        await asyncio.Event().wait()

    return stuck


async def _failing_agent(ctx: TaskContext) -> None:
    raise TaskFailure("upstream_error", "the model is down")


@contextlib.contextmanager
def hooked(
    webhooks: WebhookSettings,
    redis_url: str | None = None,
    registry: TaskRegistry | None = None,
    resolve: FakeDNS | None = None,
    **overrides: Any,
) -> Iterator[ThreadedServer]:
    """A gateway with ``install_webhooks`` applied (re-configures it once it is wired)."""
    fields = {
        "echo_token_delay_ms": 0.0,
        "intake_wait": INTAKE_WAIT,
        "redis_prefix": f"agw-test-{secrets.token_hex(4)}",
        **overrides,
    }
    settings = dataclasses.replace(Settings.from_env({}), redis_url=redis_url, **fields)
    app = create_app(settings, registry=registry)
    install_webhooks(app, webhooks, resolve)
    with serve_app(app) as server:
        yield server


async def settled(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """Poll the delivery record until it is delivered or failed (bounded)."""
    with anyio.fail_after(15):
        while True:
            record: dict[str, Any] = (await client.get(f"/api/tasks/{task_id}/webhook")).json()
            if record["status"] in ("delivered", "failed"):
                return record
            await anyio.sleep(0.05)


def verify_signature(secret: str, call: Call) -> None:
    """Standard Webhooks verification, written out independently of ``gateway.webhooks``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = call.headers["webhook-id"], call.headers["webhook-timestamp"]
    content = f"{msg_id}.{timestamp}.".encode() + call.body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in call.headers["webhook-signature"].split() if "," in s]
    assert any(hmac.compare_digest(expected, sig) for sig in offered)
    assert abs(int(timestamp) - time.time()) < 60


def settings_for(**fields: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "secret": parse_secret(SECRET),
        "allow_hosts": ("127.0.0.1",),
        "backoff": 0.2,
        "poll_interval": 0.05,
        **fields,
    }
    return WebhookSettings(**values)


# -- delivery ----------------------------------------------------------------------------------
async def test_a_completed_task_is_posted_signed_and_retried_after_two_500s(
    store_url: str | None,
) -> None:
    with receiving([500, 500, 204]) as (receiver, url), hooked(settings_for(), store_url) as gw:
        async with client_of(gw) as client:
            body = {"query": "hello hooks", "agentType": 0, "callbackUrl": url}
            task_id = (await client.post("/api/tasks", json=body)).json()["taskId"]
            record = await settled(client, task_id)
            snapshot = (await client.get(f"/api/tasks/{task_id}")).json()
    assert len(receiver.calls) == 3
    for call in receiver.calls:
        verify_signature(SECRET, call)
        assert call.headers["content-type"] == "application/json"
    assert len({c.headers["webhook-id"] for c in receiver.calls}) == 1
    payload = orjson.loads(receiver.calls[-1].body)
    assert payload["type"] == "task.completed"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"]["taskId"] == task_id
    assert payload["data"]["status"] == "COMPLETED"
    assert payload["data"]["result"] == "hello hooks"
    assert payload["data"]["links"]["events"] == f"/api/tasks/{task_id}/events"
    first_gap = receiver.calls[1].at - receiver.calls[0].at
    second_gap = receiver.calls[2].at - receiver.calls[1].at
    assert first_gap >= 0.18 and second_gap >= 0.36 and second_gap > first_gap
    assert record["status"] == "delivered"
    assert record["attempts"] == 3 and record["lastStatus"] == 204
    assert record["deliveredAt"] >= snapshot["endedAt"]
    assert record["webhookId"] == receiver.calls[0].headers["webhook-id"]
    assert record["callbackUrl"] == url


async def test_a_4xx_answer_is_final_and_recorded_as_failed() -> None:
    with receiving([410]) as (receiver, url), hooked(settings_for()) as gw:
        async with client_of(gw) as client:
            body = {"query": "gone", "agentType": 0, "callbackUrl": url}
            task_id = (await client.post("/api/tasks", json=body)).json()["taskId"]
            record = await settled(client, task_id)
            plain = (await client.post("/api/tasks", json={"query": "x", "agentType": 0})).json()
            no_hook = await client.get(f"/api/tasks/{plain['taskId']}/webhook")
    assert len(receiver.calls) == 1
    assert record["status"] == "failed"
    assert record["attempts"] == 1 and record["lastStatus"] == 410
    assert record["lastError"] == "HTTP 410"
    assert no_hook.status_code == 404 and no_hook.json()["error"]["code"] == "not_found"


async def test_failed_cancelled_and_interrupted_tasks_get_their_webhook() -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    registry = TaskRegistry()
    registry.register(1, _failing_agent)
    registry.register(2, _stuck_agent(loops))
    lease = {"lease_ttl": 0.3, "lease_renew_interval": 0.05, "sweep_interval": 0.05}
    with (
        receiving() as (receiver, url),
        hooked(settings_for(), registry=registry, **lease) as gw,
    ):
        app = gw.server.config.app  # type: ignore[attr-defined]
        async with client_of(gw) as client:

            async def submit(agent_type: int) -> str:
                body = {"query": "q", "agentType": agent_type, "callbackUrl": url}
                task_id: str = (await client.post("/api/tasks", json=body)).json()["taskId"]
                return task_id

            failed = await submit(1)
            cancelled = await submit(2)
            with anyio.fail_after(10):
                while len(loops) < 1:
                    await anyio.sleep(0.02)
            assert (await client.post(f"/api/tasks/{cancelled}/cancel")).status_code == 200
            orphaned = await submit(2)
            with anyio.fail_after(10):
                while len(loops) < 2:
                    await anyio.sleep(0.02)
            # Its worker "dies": nobody renews the lease, so the sweeper ends the task.
            dead: list[Any] = []
            running = app.state.manager.running
            loops[1].call_soon_threadsafe(lambda: dead.append(running.pop(orphaned)))
            records = {t: await settled(client, t) for t in (failed, cancelled, orphaned)}
            # Its handler, hidden from the manager, would hold the gateway's shutdown for 10 s.
            loops[1].call_soon_threadsafe(dead[0].stop, "shutdown")
    assert {r["status"] for r in records.values()} == {"delivered"}
    payloads = {}
    for call in receiver.calls:
        verify_signature(SECRET, call)
        payload = orjson.loads(call.body)
        payloads[payload["data"]["taskId"]] = payload
    assert payloads[failed]["type"] == "task.failed"
    assert payloads[failed]["data"]["error"]["code"] == "upstream_error"
    assert payloads[cancelled]["type"] == "task.cancelled"
    assert payloads[orphaned]["type"] == "task.failed"
    assert payloads[orphaned]["data"]["error"]["code"] == "interrupted"
    assert len(receiver.calls) == 3


# -- the SSRF guard ----------------------------------------------------------------------------
async def test_non_public_callback_urls_are_refused_at_submit_unless_allowlisted() -> None:
    dns = FakeDNS({"localhost": ["127.0.0.1"], "internal.example": ["10.0.0.5"]})
    refused_urls = [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://internal.example/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://nowhere.example/hook",
    ]
    with hooked(settings_for(allow_hosts=()), resolve=dns) as gw:
        async with client_of(gw) as client:
            answers = [
                await client.post(
                    "/api/tasks", json={"query": "q", "agentType": 0, "callbackUrl": u}
                )
                for u in refused_urls
            ]
    allowed = settings_for(allow_hosts=("10.0.0.0/8",))
    with hooked(allowed, resolve=dns) as gw:
        async with client_of(gw) as client:
            accepted = await client.post(
                "/api/tasks",
                json={"query": "q", "agentType": 0, "callbackUrl": "http://internal.example/h"},
            )
    for url, answer in zip(refused_urls, answers, strict=True):
        assert answer.status_code == 422, url
        assert answer.json()["error"]["code"] == "invalid_request", url
        assert "callbackUrl" in answer.json()["error"]["message"], url
    assert accepted.status_code == 202


async def test_a_dns_answer_that_turns_private_at_delivery_is_refused() -> None:
    dns = FakeDNS({"hooks.example": [["93.184.216.34"], ["127.0.0.1"]]})
    with hooked(settings_for(allow_hosts=()), resolve=dns) as gw:
        async with client_of(gw) as client:
            body = {"query": "q", "agentType": 0, "callbackUrl": "http://hooks.example/h"}
            created = await client.post("/api/tasks", json=body)
            record = await settled(client, created.json()["taskId"])
    assert created.status_code == 202
    assert record["status"] == "failed" and record["attempts"] == 1
    assert record["lastStatus"] is None
    assert record["lastError"].startswith("refused: callbackUrl host hooks.example resolves")


async def test_the_request_goes_to_the_checked_address_with_the_original_host() -> None:
    with receiving() as (receiver, url):
        port = httpx.URL(url).port
        dns = FakeDNS({"hooks.test": ["127.0.0.1"]})
        webhooks = settings_for(allow_hosts=("127.0.0.0/8",))
        with hooked(webhooks, resolve=dns) as gw:
            async with client_of(gw) as client:
                body = {
                    "query": "q",
                    "agentType": 0,
                    "callbackUrl": f"http://hooks.test:{port}/hook",
                }
                task_id = (await client.post("/api/tasks", json=body)).json()["taskId"]
                record = await settled(client, task_id)
    assert record["status"] == "delivered"
    assert receiver.calls[0].headers["host"] == f"hooks.test:{port}"


async def test_check_target_pins_https_to_the_address_and_keeps_the_name_for_tls() -> None:
    dns = FakeDNS({"hooks.example": ["93.184.216.34", "2606:2800:220:1::1"]})
    target = await check_target("https://hooks.example:8443/x?y=1", TargetPolicy(()), dns)
    url, headers, extensions = target.request_args()
    assert url == "https://93.184.216.34:8443/x?y=1"
    assert headers == {"Host": "hooks.example:8443"}
    assert extensions == {"sni_hostname": "hooks.example"}
    mixed = FakeDNS({"split.example": ["93.184.216.34", "192.168.1.10"]})
    with pytest.raises(Exception, match="non-public"):
        await check_target("http://split.example/", TargetPolicy(()), mixed)


# -- signing and settings ----------------------------------------------------------------------
def test_the_signature_matches_the_standard_webhooks_reference_vector() -> None:
    secret = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert parse_secret("raw-secret") == b"raw-secret"


def test_webhook_settings_are_read_from_the_environment() -> None:
    env = {
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOW_HOSTS": "hooks.internal, 10.0.0.0/8",
        "WEBHOOK_MAX_ATTEMPTS": "3",
        "WEBHOOK_BACKOFF": "1.5",
    }
    settings = WebhookSettings.from_env(env)
    assert settings.allow_hosts == ("hooks.internal", "10.0.0.0/8")
    assert (settings.max_attempts, settings.backoff) == (3, 1.5)
    assert "secret" not in repr(settings) and SECRET[6:] not in repr(settings)
    with pytest.raises(ValueError):
        WebhookSettings.from_env({"WEBHOOK_ALLOW_HOSTS": "10.0.0.0/99"})
    with pytest.raises(ValueError):
        WebhookSettings.from_env({"WEBHOOK_SECRET": "whsec_***"})
