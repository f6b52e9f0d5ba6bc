"""The SDK's ``RequestHandler`` over our task manager and store: no second task system.

Each method answers from the store (any replica); submitting goes through the same
``submit`` as ``POST /api/tasks`` (queue limits, owner). With API keys on, a task of another
key is a ``TaskNotFoundError``, as it is a 404 on the native API.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers import RequestHandler
from a2a.server.request_handlers.request_handler import validate_request_params
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import (
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from pydantic import ValidationError
from starlette.requests import Request

from gateway.a2a import _log
from gateway.a2a._listing import list_tasks
from gateway.a2a._notes import task_notes
from gateway.a2a.push import NOTE as PUSH_NOTE
from gateway.a2a.push import PushConfigs
from gateway.protocol import AgentRequest, TaskRecord, new_task_id
from gateway.routes.errors import ApiError
from gateway.routes.sse import StreamSettings
from gateway.routes.tasks import submit
from gateway.security import key_name
from gateway.store import TaskExtras, TaskNotFound
from gateway.tasks import TaskManager

REQUEST = "gateway.request"
"""Where the call context keeps the Starlette request (its key name, its app)."""


def _request(context: ServerCallContext) -> Request:
    request: Request = context.state[REQUEST]
    return request


def _query(message: Message) -> str:
    texts = [part.text for part in message.parts if part.WhichOneof("content") == "text"]
    query = "\n".join(t for t in texts if t.strip())
    if not query:
        raise InvalidParamsError(message="the message needs at least one non-empty text part")
    return query


def _agent_type(params: SendMessageRequest, default: int) -> Any:
    for metadata in (params.message.metadata, params.metadata):
        if "agentType" in metadata:
            value = metadata["agentType"]
            return int(value) if isinstance(value, float) and value.is_integer() else value
    return default


class GatewayRequestHandler(RequestHandler):
    """A2A requests answered by the gateway's tasks (see the package docstring)."""

    def __init__(self, card: AgentCard, default_agent_type: int, push: PushConfigs) -> None:
        self.card = card
        self.default_agent_type = default_agent_type
        self.push = push

    # -- helpers ----------------------------------------------------------------------------
    async def record(self, context: ServerCallContext, task_id: str) -> TaskRecord:
        """The task ``task_id`` if the caller may see it, else ``TaskNotFoundError``."""
        request = _request(context)
        store = request.app.state.store
        record = await store.get_for(task_id, key_name(request)) if task_id else None
        if record is None:
            raise TaskNotFoundError
        return record

    async def _snapshot(
        self, context: ServerCallContext, record: TaskRecord, history_length: int | None = None
    ) -> Task:
        app = _request(context).app
        return await _log.snapshot(app.state.store, task_notes(app), record, history_length)

    def _extras(self, request: Request, task_id: str, params: SendMessageRequest) -> TaskExtras:
        """What a new task is written with (in the create's round trip, so no crash leaves it
        without them): its A2A context and first message, and its push config if it has one."""
        message = params.message
        context_id = message.context_id or uuid.uuid5(uuid.NAMESPACE_URL, task_id).hex
        stored = Message()
        stored.CopyFrom(message)
        stored.task_id, stored.context_id = task_id, context_id
        notes = {_log.NOTE: _log.first_note(context_id, stored)}
        deliveries = []
        if params.configuration.HasField("task_push_notification_config"):
            config = self.push.stored(task_id, params.configuration.task_push_notification_config)
            notes[PUSH_NOTE] = self.push.note(config)
            deliveries.append(self.push.delivery(config))
        return task_notes(request.app).extras(notes, deliveries)

    async def _start(self, params: SendMessageRequest, context: ServerCallContext) -> TaskRecord:
        """Submit the message as a new task (a message naming a task: see below)."""
        message = params.message
        if message.task_id:
            record = await self.record(context, message.task_id)
            state = "has ended" if record.terminal else "is running"
            raise UnsupportedOperationError(
                message=f"task {message.task_id} {state}; this agent takes no further input "
                "on a task: send a new message without taskId"
            )
        try:
            agent_request = AgentRequest.model_validate(
                {
                    "query": _query(message),
                    "agentType": _agent_type(params, self.default_agent_type),
                }
            )
        except ValidationError as exc:
            raise InvalidParamsError(message=f"invalid request: {exc.errors()[0]['msg']}") from exc
        push = params.configuration.task_push_notification_config
        if params.configuration.HasField("task_push_notification_config"):
            await self.push.check(push)
        request = _request(context)
        task_id = new_task_id()  # made here: the notes written with the task name it
        # The messageId is the idempotency key: a retried message is the same task, with the
        # context and configs of the first send (the store writes nothing of a retry's).
        try:
            record = await submit(
                request,
                agent_request,
                f"a2a-message:{message.message_id}",
                key_label="messageId",
                task_id=task_id,
                extras=self._extras(request, task_id, params),
            )
        except ApiError as exc:
            error = InvalidParamsError if exc.status_code == 422 else InternalError
            raise error(message=exc.message) from exc
        return record

    # -- the methods ------------------------------------------------------------------------
    @validate_request_params
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        """``GetTask``: the task folded from its log."""
        record = await self.record(context, params.id)
        length = params.history_length if params.HasField("history_length") else None
        if length is not None and length < 0:
            raise InvalidParamsError(message="historyLength must not be negative")
        return await self._snapshot(context, record, length)

    @validate_request_params
    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        """``ListTasks``: the caller's tasks, newest first."""
        request = _request(context)
        return await list_tasks(
            request.app.state.store, task_notes(request.app), key_name(request), params
        )

    @validate_request_params
    async def on_cancel_task(
        self, params: CancelTaskRequest, context: ServerCallContext
    ) -> Task | None:
        """``CancelTask``: our cancel (confirmed by the task's worker, on any replica)."""
        record = await self.record(context, params.id)
        if record.terminal:
            raise TaskNotCancelableError(message=f"the task is {record.status.value}")
        manager: TaskManager = _request(context).app.state.manager
        try:
            record = await manager.cancel(record.task_id)
        except TaskNotFound as exc:
            raise TaskNotFoundError from exc
        return await self._snapshot(context, record)

    @validate_request_params
    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        """``SendMessage``: a new task; answered at once with ``returnImmediately``, else
        when it ends (bounded by the task timeout)."""
        record = await self._start(params, context)
        if not params.configuration.return_immediately:
            manager: TaskManager = _request(context).app.state.manager
            record = await manager.wait_terminal(
                record.task_id, manager.settings.task_timeout + manager.settings.cancel_wait
            )
        length = (
            params.configuration.history_length
            if params.configuration.HasField("history_length")
            else None
        )
        return await self._snapshot(context, record, length)

    async def stream(
        self, context: ServerCallContext, record: TaskRecord, after: int | None
    ) -> AsyncGenerator[tuple[int | None, Event | None]]:
        """``(id, event)`` of ``record`` after ``after`` (see :func:`_log.events`), until the task
        ends, the replica drains or the connection is ``SSE_MAX_AGE`` old."""
        app = _request(context).app
        settings: StreamSettings = app.state.stream_settings
        draining = app.state.draining
        clock = asyncio.get_running_loop().time
        deadline = clock() + settings.sse_max_age

        def stop() -> bool:
            return bool(draining.is_set()) or clock() > deadline

        async for item in _log.events(
            app.state.store,
            task_notes(app),
            record,
            after,
            heartbeat=settings.heartbeat_interval,
            stop=stop,
        ):
            yield item

    async def start_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[tuple[int | None, Event | None]]:
        """``SendStreamingMessage`` with ids: submit, then the task's events from the start."""
        record = await self._start(params, context)
        return self.stream(context, record, 0)

    async def open_subscription(
        self, params: SubscribeToTaskRequest, context: ServerCallContext, after: int | None
    ) -> AsyncGenerator[tuple[int | None, Event | None]]:
        """``SubscribeToTask`` with ids: refused on an ended task unless resuming (``after``)."""
        record = await self.record(context, params.id)
        if record.terminal and after is None:
            raise UnsupportedOperationError(
                message=f"the task is {record.status.value}: there is nothing to subscribe to"
            )
        return self.stream(context, record, after)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """``SendStreamingMessage`` as the SDK's dispatchers call it (events without ids)."""
        async for _, event in await self.start_stream(params, context):
            if event is not None:
                yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """``SubscribeToTask`` as the SDK's dispatchers call it (events without ids)."""
        async for _, event in await self.open_subscription(params, context, None):
            if event is not None:
                yield event

    # -- push notifications -----------------------------------------------------------------
    @validate_request_params
    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        """Register a push config of a task (SSRF-checked; delivered signed when it ends)."""
        record = await self.record(context, params.task_id)
        await self.push.check(params)
        return await self.push.create(record.task_id, params)

    @validate_request_params
    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        """One push config of a task."""
        record = await self.record(context, params.task_id)
        for config in await self.push.configs(record.task_id):
            if config.id == params.id:
                return config
        raise TaskNotFoundError(message=f"no push notification config {params.id!r}")

    @validate_request_params
    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        """The push configs of a task."""
        record = await self.record(context, params.task_id)
        return ListTaskPushNotificationConfigsResponse(
            configs=await self.push.configs(record.task_id)
        )

    @validate_request_params
    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        """Remove a push config of a task (idempotent)."""
        record = await self.record(context, params.task_id)
        await self.push.delete(record.task_id, params.id)

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        """There is no extended card (the card says so)."""
        raise ExtendedAgentCardNotConfiguredError


__all__ = ["REQUEST", "GatewayRequestHandler"]
