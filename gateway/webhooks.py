"""Webhooks: a signed POST to a task's ``callbackUrl`` when it ends, retried, recorded, SSRF-safe.

``install_webhooks(app, settings)`` adds to the gateway app:

- :class:`WebhookDispatcher` (``app.state.webhooks``), where submitting finds it
  (``gateway.routes.tasks``): the validated request's callback URL, whichever spelling it came
  in, is refused there (422 ``invalid_request``) unless the gateway may call it. It is the
  ``webhook`` channel of the durable outbox (:mod:`gateway.outbox`, ``app.state.outbox``, run
  by the app's lifespan on every replica): a task created with a ``callbackUrl`` has its
  delivery in the store from the start, due once the task is terminal — however it ended
  (completed, failed, cancelled, timed out, or ``interrupted`` by any replica's sweeper) — and
  made by whichever replica is alive, retries included;
- ``GET /api/tasks/{id}/webhook``: the delivery record (status, attempts with their time and
  HTTP status or error, next attempt), owner-scoped like the other task routes.

Delivery follows Standard Webhooks (https://www.standardwebhooks.com/): the body is
``{"type": "task.completed" | "task.failed" | "task.cancelled", "timestamp", "data": snapshot}``;
headers ``webhook-id`` (the same on every attempt), ``webhook-timestamp`` (seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`` keyed by
``WEBHOOK_SECRET`` (``whsec_<base64>`` or raw). Network errors, timeouts, 429 and 5xx are retried
after ``backoff * 2**n`` seconds (``Retry-After`` respected, capped); other answers are final.
Redirects are not followed.

SSRF guard (:mod:`gateway.ssrf`): every address of the host must be public — IPv6 transition
forms are judged by the IPv4 address they reach — unless the host or a CIDR holding the address
is in ``WEBHOOK_ALLOW_HOSTS``. It runs at submit time and again at each attempt, and the request
goes to the very address that was checked, so a DNS answer that changes in between (rebinding)
cannot redirect it.

The payload's ``data`` is the task's snapshot; its ``lastSeq`` is the seq of the task's final
message, so a receiver reads the log with ``GET /api/tasks/{id}?after=<n>`` up to it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway._env import env_number
from gateway.errors import error_response
from gateway.outbox import Attempt, OutboxSender
from gateway.protocol import TaskRecord, now_ms, parse_decimal, task_snapshot
from gateway.security import key_name
from gateway.ssrf import (
    Resolver,
    Target,
    TargetPolicy,
    TargetRefused,
    check_target,
    system_resolve,
)
from gateway.store import WEBHOOK, StreamStore

__all__ = [
    "Resolver",
    "TargetPolicy",
    "WebhookDispatcher",
    "WebhookRefused",
    "WebhookSettings",
    "check_target",
    "install_webhooks",
    "sign",
]

logger = logging.getLogger(__name__)

WebhookRefused = TargetRefused
"""The callback URL is not one the gateway will call (the guard's error, under its old name)."""


def parse_secret(raw: str) -> bytes:
    """``whsec_<base64>`` → its bytes; anything else is used as raw UTF-8."""
    raw = raw.strip()
    if raw.startswith("whsec_"):
        try:
            return base64.b64decode(raw[len("whsec_") :], validate=True)
        except ValueError as exc:
            raise ValueError("WEBHOOK_SECRET: whsec_ must be followed by base64") from exc
    return raw.encode()


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    return env_number(env, name, default, minimum=minimum)


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``WEBHOOK_SECRET``, ``WEBHOOK_ALLOW_HOSTS``, ``WEBHOOK_MAX_ATTEMPTS``,
    ``WEBHOOK_BACKOFF``, ``WEBHOOK_MAX_BACKOFF``, ``WEBHOOK_TIMEOUT``, ``WEBHOOK_POLL_INTERVAL``.

    Without a secret, deliveries carry no ``webhook-signature`` (a warning is logged once).
    ``WEBHOOK_BACKOFF`` is the first delay; each retry doubles it, up to ``WEBHOOK_MAX_BACKOFF``.
    """

    secret: bytes = dataclasses.field(default=b"", repr=False)
    allow_hosts: tuple[str, ...] = ()
    max_attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 60.0
    timeout: float = 10.0
    poll_interval: float = 0.25
    max_concurrency: int = 32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookSettings:
        """Read the variables above (default ``os.environ``); bad values raise ``ValueError``."""
        env = os.environ if environ is None else environ
        allow = tuple(h.strip() for h in env.get("WEBHOOK_ALLOW_HOSTS", "").split(",") if h.strip())
        settings = cls(
            secret=parse_secret(env.get("WEBHOOK_SECRET", "")),
            allow_hosts=allow,
            max_attempts=int(_number(env, "WEBHOOK_MAX_ATTEMPTS", 5, 1)),
            backoff=_number(env, "WEBHOOK_BACKOFF", 0.5, 0),
            max_backoff=_number(env, "WEBHOOK_MAX_BACKOFF", 60.0, 0),
            timeout=_number(env, "WEBHOOK_TIMEOUT", 10.0, 0.01),
            poll_interval=_number(env, "WEBHOOK_POLL_INTERVAL", 0.25, 0.01),
        )
        TargetPolicy(settings.allow_hosts)  # validates the CIDRs now, not at the first delivery
        return settings


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "{id}.{ts}.{body}">``
    (the ``standardwebhooks`` package's signer)."""
    when = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return Webhook(secret).sign(msg_id, when, body)


# -- delivery ----------------------------------------------------------------------------------
def _retry_after(raw: str | None) -> float | None:
    """A receiver's ``Retry-After`` in seconds (delta-seconds); ``None`` for anything else, so
    the delivery keeps its own back-off (a date, ``²`` or ``1e9`` are not delta-seconds)."""
    seconds = parse_decimal(raw.strip()) if raw else None
    return None if seconds is None else float(seconds)


def _payload(record: TaskRecord) -> bytes:
    stamp = datetime.datetime.fromtimestamp((record.ended_at or now_ms()) / 1000, datetime.UTC)
    return orjson.dumps(
        {
            "type": f"task.{record.status.value.lower()}",
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": task_snapshot(record),
        }
    )


class WebhookDispatcher:
    """The webhook side: the callback URL guard, the signed POST (also A2A push's), and the
    ``webhook`` channel of the outbox (:mod:`gateway.outbox`), which makes the deliveries."""

    def __init__(
        self,
        store: StreamStore,
        settings: WebhookSettings,
        resolve: Resolver | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.policy = TargetPolicy(settings.allow_hosts)
        self.resolve = resolve or system_resolve
        self._warned_unsigned = False

    # -- API ------------------------------------------------------------------------------
    async def check(self, url: str) -> Target:
        """Refuse (``WebhookRefused``) a callback URL the gateway must not call."""
        try:
            return await check_target(url, self.policy, self.resolve)
        except (OSError, TimeoutError) as exc:
            raise WebhookRefused(f"callbackUrl host does not resolve: {exc}") from None

    async def refusal(self, url: str) -> str | None:
        """Why the gateway will not call ``url`` (``None``: it will); asked at submit."""
        try:
            await self.check(url)
        except WebhookRefused as exc:
            return str(exc)
        return None

    async def delivery(self, task_id: str) -> dict[str, Any]:
        """The delivery record of ``task_id`` (``status: pending`` before the first attempt)."""
        raw = (await self.store.outbox.records(task_id)).get(WEBHOOK, {})
        attempts = raw.get("attempts", [])
        last = attempts[-1] if attempts else {}
        return {
            "status": raw.get("status", "pending"),
            "attempts": int(raw.get("count", 0)),
            "lastStatus": last.get("status"),
            "lastError": last.get("error"),
            "lastAttemptAt": raw.get("lastAttemptAt"),
            "deliveredAt": raw.get("deliveredAt"),
            "nextAttemptAt": raw.get("nextAttemptAt"),
            "webhookId": raw.get("webhookId") or self.message_id(task_id, WEBHOOK),
            "history": attempts,
        }

    # -- the outbox's channel -------------------------------------------------------------
    def message_id(self, task_id: str, name: str) -> str:
        """``msg_<task id>``: one webhook per task."""
        return f"msg_{task_id}"

    async def attempt(
        self, client: httpx.AsyncClient, record: TaskRecord, name: str, msg_id: str
    ) -> Attempt | None:
        """POST the ended task's payload to its ``callbackUrl``."""
        url = record.request.get("callbackUrl")
        if not url:
            return None
        return await self.post(client, str(url), msg_id, _payload(record))

    async def post(
        self,
        client: httpx.AsyncClient,
        url: str,
        msg_id: str,
        body: bytes,
        extra: Mapping[str, str] | None = None,
        agent: str = "agent-gateway-webhooks",
    ) -> Attempt:
        """One signed POST of ``body`` to ``url`` (SSRF-checked again, sent to the address
        checked), with ``extra`` headers; retried by the caller if the outcome says so."""
        try:
            target = await check_target(url, self.policy, self.resolve)
        except WebhookRefused as exc:
            return Attempt(False, False, error=f"refused: {exc}")
        except (OSError, TimeoutError) as exc:
            return Attempt(False, True, error=f"dns: {exc or type(exc).__name__}")
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": agent,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            **(extra or {}),
        }
        if self.settings.secret:
            headers["webhook-signature"] = sign(self.settings.secret, msg_id, timestamp, body)
        elif not self._warned_unsigned:
            self._warned_unsigned = True
            logger.warning("WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        request_url, pinned, extensions = target.request_args()
        try:
            async with client.stream(
                "POST",
                request_url,
                content=body,
                headers={**headers, **pinned},
                extensions=extensions,
            ) as response:  # the body is never read: a receiver cannot make us buffer it
                status = response.status_code
                retry_after = _retry_after(response.headers.get("retry-after"))
        except httpx.HTTPError as exc:
            return Attempt(False, True, error=f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return Attempt(True, False, status)
        retry = status == 429 or status >= 500
        return Attempt(False, retry, status, f"HTTP {status}", retry_after)


# -- the app side ------------------------------------------------------------------------------
async def webhook_status(request: Request) -> Response:
    """``GET /api/tasks/{id}/webhook``: the delivery record of a task with a ``callbackUrl``."""
    task_id = request.path_params["task_id"]
    record = await request.app.state.store.get_for(task_id, key_name(request))
    if record is None or not record.request.get("callbackUrl"):
        return error_response(404, "not_found", "no task with a callbackUrl has that id")
    dispatcher: WebhookDispatcher = request.app.state.webhooks
    state = await dispatcher.delivery(task_id)
    answer = {"taskId": task_id, "callbackUrl": record.request["callbackUrl"], **state}
    return Response(orjson.dumps(answer), media_type="application/json")


def install_webhooks(
    app: Starlette, settings: WebhookSettings | None = None, resolve: Resolver | None = None
) -> WebhookDispatcher:
    """Add webhooks to ``app`` before it starts; idempotent.

    A second call replaces the dispatcher (its settings and ``resolve``) and nothing else.
    """
    settings = settings or WebhookSettings()
    dispatcher = WebhookDispatcher(app.state.store, settings, resolve)
    installed = getattr(app.state, "webhooks", None) is not None
    app.state.webhooks = dispatcher
    if not installed:
        app.state.outbox = OutboxSender(app.state.store, lambda: app.state.webhooks.settings)
    app.state.outbox.channels[WEBHOOK] = dispatcher
    if installed:
        return dispatcher
    if app.middleware_stack is not None:
        raise RuntimeError("install_webhooks must run before the app starts")
    app.router.routes.append(Route("/api/tasks/{task_id}/webhook", webhook_status, methods=["GET"]))
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Any]:
        async with inner(app) as state, app.state.outbox.running():
            yield state

    app.router.lifespan_context = lifespan
    return dispatcher
