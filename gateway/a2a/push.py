"""A2A push notifications on the webhook machinery: configs beside the task, signed delivery.

A config (``CreateTaskPushNotificationConfig``, or ``configuration.taskPushNotificationConfig``
of ``SendMessage``) is checked by the webhooks' SSRF guard when it is made (refused:
``InvalidParamsError``) and again at each attempt, and kept in the task's notes (kind
``a2a-push``), so every replica sees it. When the task ends, the replica that took the
config POSTs ``{"task": <Task>}`` (a v1.0 ``StreamResponse``) to each URL, signed as our
webhooks are (``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` with
``WEBHOOK_SECRET``), with the config's ``token`` as ``X-A2A-Notification-Token`` and its
``authentication`` as ``Authorization``. Network errors, 429 and 5xx are retried with the
webhooks' back-off. Like the webhooks' watch list, the list of watched tasks lives in the
replica that took the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
from a2a.types import StreamResponse, Task, TaskPushNotificationConfig
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import MessageToDict, MessageToJson, Parse
from starlette.datastructures import State

from gateway.ended_tasks import EndedTasks
from gateway.protocol import TaskRecord
from gateway.security import TaskNotes
from gateway.ssrf import TargetRefused, check_target
from gateway.store import StreamStore
from gateway.webhooks import WebhookDispatcher, sign

logger = logging.getLogger(__name__)

NOTE = "a2a-push"
Snapshot = Callable[[TaskRecord], Awaitable[Task]]


class PushConfigs:
    """The push configs of tasks, and their delivery (run by :meth:`running`)."""

    def __init__(self, store: StreamStore, notes: TaskNotes, state: State) -> None:
        self.store = store
        self.notes = notes
        self._state = state
        self.snapshot: Snapshot | None = None
        self._ended_tasks = EndedTasks(store)

    @property
    def webhooks(self) -> WebhookDispatcher:
        """The app's webhook dispatcher (its guard, resolver, secret and back-off), looked up
        on use: ``install_webhooks`` may replace it before the app starts."""
        dispatcher: WebhookDispatcher = self._state.webhooks
        return dispatcher

    async def check(self, config: TaskPushNotificationConfig) -> None:
        """Refuse a config without a URL or with one the gateway must not call."""
        if not config.url:
            raise InvalidParamsError(message="a push notification config needs a url")
        reason = await self.webhooks.refusal(config.url)
        if reason is not None:
            raise InvalidParamsError(message=reason.replace("callbackUrl", "url"))

    async def create(
        self, task_id: str, config: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        """Store ``config`` for ``task_id`` (a new id when it has none) and watch the task."""
        stored = TaskPushNotificationConfig()
        stored.CopyFrom(config)
        stored.task_id = task_id
        stored.id = config.id or uuid.uuid4().hex
        stored.tenant = ""
        await self.notes.set(task_id, NOTE, {stored.id: MessageToJson(stored)})
        self._ended_tasks.watch(task_id)
        return stored

    async def configs(self, task_id: str) -> list[TaskPushNotificationConfig]:
        """The configs of ``task_id`` (deleted ones are kept as empty fields)."""
        fields = await self.notes.get(task_id, NOTE)
        return [Parse(raw, TaskPushNotificationConfig()) for raw in fields.values() if raw]

    async def delete(self, task_id: str, config_id: str) -> None:
        """Forget one config (notes cannot drop a field: it is emptied)."""
        fields = await self.notes.get(task_id, NOTE)
        if fields.get(config_id):
            await self.notes.set(task_id, NOTE, {config_id: ""})

    # -- delivery ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver for the duration of the block."""
        task = asyncio.create_task(self._run(), name="a2a-push")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        settings = self.webhooks.settings
        await self._ended_tasks.deliver_ended(
            self._deliver_all,
            timeout=settings.timeout,
            poll_interval=settings.poll_interval,
            label="push notification",
        )

    async def _deliver_all(self, client: httpx.AsyncClient, record: TaskRecord) -> None:
        try:
            if self.snapshot is None:
                return
            task = await self.snapshot(record)
            body = orjson.dumps(MessageToDict(StreamResponse(task=task)))
            for config in await self.configs(record.task_id):
                await self._deliver(client, config, body)
        except Exception:  # one bad delivery must not end the task group
            logger.exception("push notification of %s failed", record.task_id)

    async def _deliver(
        self, client: httpx.AsyncClient, config: TaskPushNotificationConfig, body: bytes
    ) -> None:
        settings = self.webhooks.settings
        msg_id = f"msg_{config.task_id}_{config.id}"
        for attempt in range(1, settings.max_attempts + 1):
            retry = await self._attempt(client, config, msg_id, body)
            if not retry or attempt == settings.max_attempts:
                return
            await asyncio.sleep(min(settings.max_backoff, settings.backoff * 2 ** (attempt - 1)))

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        config: TaskPushNotificationConfig,
        msg_id: str,
        body: bytes,
    ) -> bool:
        """One POST; whether it is worth another attempt."""
        try:
            target = await check_target(config.url, self.webhooks.policy, self.webhooks.resolve)
        except TargetRefused as exc:
            logger.warning("push notification of %s refused: %s", config.task_id, exc)
            return False
        except (OSError, TimeoutError):
            return True
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "agent-gateway-a2a-push",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        secret = self.webhooks.settings.secret
        if secret:
            headers["webhook-signature"] = sign(secret, msg_id, timestamp, body)
        if config.token:
            headers["x-a2a-notification-token"] = config.token
        if config.HasField("authentication") and config.authentication.credentials:
            auth = config.authentication
            headers["authorization"] = f"{auth.scheme or 'Bearer'} {auth.credentials}"
        url, extra, extensions = target.request_args()
        try:
            async with client.stream(
                "POST", url, content=body, headers={**headers, **extra}, extensions=extensions
            ) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            logger.info("push notification of %s: %s", config.task_id, exc)
            return True
        return status == 429 or status >= 500


__all__ = ["PushConfigs"]
