"""A2A push notifications through the durable outbox: configs beside the task, signed delivery.

A config (``CreateTaskPushNotificationConfig``, or ``configuration.taskPushNotificationConfig``
of ``SendMessage``) is checked by the webhooks' SSRF guard when it is made (refused:
``InvalidParamsError``) and again at each attempt, and kept in the task's notes (kind
``a2a-push``), so every replica sees it; each config is also a delivery in the store's outbox
(``a2a-push:<config id>``), due once the task ends. Whichever replica is alive then
(:mod:`gateway.outbox`) POSTs ``{"task": <Task>}`` (a v1.0 ``StreamResponse``) to its URL,
signed as our webhooks are (``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` with
``WEBHOOK_SECRET``), with the config's ``token`` as ``X-A2A-Notification-Token`` and its
``authentication`` as ``Authorization``. Network errors, 429 and 5xx are retried with the
webhooks' back-off, and the retries survive restarts. A config deleted before its delivery is
not sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
import orjson
from a2a.types import StreamResponse, Task, TaskPushNotificationConfig
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import MessageToDict, MessageToJson, Parse
from starlette.datastructures import State

from gateway.a2a._notes import TaskNotes
from gateway.outbox import Attempt
from gateway.protocol import TaskRecord
from gateway.store import StreamStore
from gateway.webhooks import WebhookDispatcher

NOTE = "a2a-push"
Snapshot = Callable[[TaskRecord], Awaitable[Task]]


class PushConfigs:
    """The push configs of tasks, and the ``a2a-push`` channel of the outbox that delivers them."""

    def __init__(self, store: StreamStore, notes: TaskNotes, state: State) -> None:
        self.store = store
        self.notes = notes
        self._state = state
        self.snapshot: Snapshot | None = None

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

    @staticmethod
    def stored(task_id: str, config: TaskPushNotificationConfig) -> TaskPushNotificationConfig:
        """``config`` as it is kept for ``task_id`` (a new id when it has none)."""
        stored = TaskPushNotificationConfig()
        stored.CopyFrom(config)
        stored.task_id = task_id
        stored.id = config.id or uuid.uuid4().hex
        stored.tenant = ""
        return stored

    @staticmethod
    def note(stored: TaskPushNotificationConfig) -> dict[str, str]:
        """The ``NOTE`` fields that keep ``stored``."""
        return {stored.id: MessageToJson(stored)}

    @staticmethod
    def delivery(stored: TaskPushNotificationConfig) -> str:
        """The name of ``stored``'s delivery in the outbox."""
        return f"{NOTE}:{stored.id}"

    async def create(
        self, task_id: str, config: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        """Store ``config`` for the existing task ``task_id`` and watch the task. (A config
        sent with the message that makes a task is written with it: see :meth:`stored`.)"""
        stored = self.stored(task_id, config)
        await self.notes.set(task_id, NOTE, self.note(stored))
        await self.store.outbox.enroll(task_id, self.delivery(stored))
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

    # -- the outbox's channel -------------------------------------------------------------
    def message_id(self, task_id: str, name: str) -> str:
        """``msg_<task id>_<config id>``."""
        return f"msg_{task_id}_{name.partition(':')[2]}"

    async def attempt(
        self, client: httpx.AsyncClient, record: TaskRecord, name: str, msg_id: str
    ) -> Attempt | None:
        """POST the task (as it is now: it has ended) to the config's URL; ``None`` when the
        config was deleted."""
        raw = (await self.notes.get(record.task_id, NOTE)).get(name.partition(":")[2])
        if not raw or self.snapshot is None:
            return None  # deleted
        config = Parse(raw, TaskPushNotificationConfig())
        task = await self.snapshot(record)
        body = orjson.dumps(MessageToDict(StreamResponse(task=task)))
        headers = {}
        if config.token:
            headers["x-a2a-notification-token"] = config.token
        if config.HasField("authentication") and config.authentication.credentials:
            auth = config.authentication
            headers["authorization"] = f"{auth.scheme or 'Bearer'} {auth.credentials}"
        return await self.webhooks.post(
            client, config.url, msg_id, body, headers, "agent-gateway-a2a-push"
        )


__all__ = ["PushConfigs"]
