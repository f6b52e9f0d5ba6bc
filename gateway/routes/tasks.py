"""The native task API (DESIGN §4): submit, stream, poll, cancel, list."""

from __future__ import annotations

from typing import Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocol import AgentRequest, TaskRecord, TaskStatus, parse_decimal
from gateway.protocol import task_links as links
from gateway.protocol import task_snapshot as snapshot
from gateway.protocol.numbers import MAX_DIGITS
from gateway.routes.errors import ApiError, json_response, read_model
from gateway.routes.sse import LogStream
from gateway.security import key_name, scoped_key
from gateway.store import IdempotencyKeyReused, TaskExtras, TaskNotFound, replay
from gateway.tasks import QueueFull, TaskManager, UnknownAgentType

MAX_POLL_LIMIT = 1000
MAX_LIST_LIMIT = 200


def _manager(request: Request) -> TaskManager:
    manager: TaskManager = request.app.state.manager
    return manager


def _int_param(raw: str | None, name: str, default: int, low: int, high: int | None) -> int:
    """A cursor or limit from the query or a header: ASCII digits only (see ``parse_decimal``)."""
    if raw is None or raw == "":
        return default
    value = parse_decimal(raw)
    if value is None:
        raise ApiError(
            400,
            "invalid_cursor" if name != "limit" else "bad_request",
            f"{name} must be a non-negative integer of ASCII digits (at most {MAX_DIGITS}), "
            f"got {raw[:40]!r}",
        )
    if value < low or (high is not None and value > high):
        raise ApiError(400, "bad_request", f"{name} must be between {low} and {high}")
    return value


class CallbackGuard(Protocol):
    """What submitting needs of the webhook side, registered as ``app.state.webhooks``."""

    async def refusal(self, url: str) -> str | None:
        """Why the gateway will not call ``url`` (``None``: it will)."""


def _callback_guard(request: Request) -> CallbackGuard:
    guard: CallbackGuard | None = getattr(request.app.state, "webhooks", None)
    if guard is None:
        raise ApiError(422, "invalid_request", "callbackUrl: this gateway sends no webhooks")
    return guard


async def parse_agent_request(request: Request) -> AgentRequest:
    """The body as an ``AgentRequest``; its callback URL (``callbackUrl`` or ``callback_url``:
    the model takes both spellings into one field) is checked here, the one place for both."""
    agent_request = await read_model(request, AgentRequest)
    if agent_request.callback_url is not None:
        reason = await _callback_guard(request).refusal(str(agent_request.callback_url))
        if reason is not None:
            raise ApiError(422, "invalid_request", reason)
    return agent_request


async def submit(
    request: Request,
    agent_request: AgentRequest,
    key: str | None,
    *,
    key_label: str = "Idempotency-Key",
    task_id: str | None = None,
    extras: TaskExtras | None = None,
) -> TaskRecord:
    """Submit ``agent_request`` for the caller of ``request``.

    ``key`` (an ``Idempotency-Key``, or the compat endpoints' ``requestId`` under
    ``key_label``) is scoped to the caller's API key name, so another key never reaches the
    task it names; reused for a different request it is refused (422). The caller is the
    tenant of a task this submission creates, written with its record, as ``extras`` are
    (``TaskManager.submit``, which also takes ``task_id``).
    """
    if key is not None and not (0 < len(key) <= 256):
        raise ApiError(400, "bad_request", f"{key_label} must be 1 to 256 characters")
    name = key_name(request)
    if key is not None and name is not None:
        key = scoped_key(name, key)
    try:
        record, _ = await _manager(request).submit(
            agent_request, key, tenant=name, task_id=task_id, extras=extras
        )
    except UnknownAgentType as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    except QueueFull as exc:
        raise ApiError(429, "queue_full", str(exc), {"Retry-After": str(exc.retry_after)}) from exc
    except IdempotencyKeyReused as exc:
        message = f"this {key_label} was already used for a different request"
        raise ApiError(422, "idempotency_key_reused", message) from exc
    return record


async def create_task(request: Request) -> Response:
    """``POST /api/tasks``: 202 + snapshot, or an SSE stream with ``Accept: text/event-stream``."""
    manager = _manager(request)
    agent_request = await parse_agent_request(request)
    record = await submit(request, agent_request, request.headers.get("idempotency-key"))
    if "text/event-stream" in request.headers.get("accept", ""):
        on_disconnect = None
        if agent_request.cancel_on_disconnect:
            task_id = record.task_id

            async def on_disconnect() -> None:
                await manager.cancel(task_id, wait=False)

        return LogStream(  # type: ignore[return-value]
            manager.store,
            record.task_id,
            0,
            request.app.state.stream_settings,
            request.app.state.metrics,
            headers={"X-Task-Id": record.task_id},
            on_disconnect=on_disconnect,
            draining=request.app.state.draining,
        )
    return json_response(
        {"taskId": record.task_id, "status": record.status.value, "links": links(record.task_id)},
        202,
        headers={"Location": links(record.task_id)["self"]},
    )


async def _record(request: Request) -> TaskRecord:
    """The task the path names, if the caller may see it (else 404, as for an unknown id)."""
    store = _manager(request).store
    record = await store.get_for(request.path_params["task_id"], key_name(request))
    if record is None:
        raise ApiError(404, "not_found", "no task with that id (unknown or expired)")
    return record


async def task_events(request: Request) -> Response:
    """``GET /api/tasks/{id}/events``: replay after the cursor, then tail, as SSE."""
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("after")
    after = _int_param(raw.strip() if raw else raw, "cursor", 0, 0, None)
    record = await _record(request)
    if after > record.last_seq and (record.terminal or record.status is TaskStatus.PENDING):
        raise ApiError(
            400, "invalid_cursor", f"cursor {after} is beyond the log ({record.last_seq})"
        )
    if record.terminal and after >= record.last_seq:
        return Response(status_code=204)  # tells EventSource to stop reconnecting
    manager = _manager(request)
    return LogStream(  # type: ignore[return-value]
        manager.store,
        record.task_id,
        after,
        request.app.state.stream_settings,
        request.app.state.metrics,
        draining=request.app.state.draining,
    )


async def get_task(request: Request) -> Response:
    """``GET /api/tasks/{id}``: the snapshot; with ``?after=`` also the messages after it."""
    params = request.query_params
    after_raw = params.get("after")
    limit = _int_param(params.get("limit"), "limit", 100, 1, MAX_POLL_LIMIT)
    after = _int_param(after_raw, "after", 0, 0, None)
    record = await _record(request)
    headers = {} if record.terminal else {"Retry-After": "1"}
    body = snapshot(record)
    if after_raw is not None:
        if after > record.last_seq and record.terminal:
            raise ApiError(
                400, "invalid_cursor", f"after={after} is beyond the log ({record.last_seq})"
            )
        try:
            messages = await replay(_manager(request).store, record.task_id, after, limit)
        except TaskNotFound as exc:
            raise ApiError(404, "not_found", "the task expired") from exc
        body["messages"] = [orjson.Fragment(m.data) for m in messages]
        body["nextAfter"] = messages[-1].seq if messages else after
    return json_response(body, headers=headers)


async def cancel_task(request: Request) -> Response:
    """``POST /api/tasks/{id}/cancel``: idempotent; answers once the stop is confirmed."""
    try:
        record = await _manager(request).cancel(
            request.path_params["task_id"], tenant=key_name(request)
        )
    except TaskNotFound as exc:
        raise ApiError(404, "not_found", "no task with that id (unknown or expired)") from exc
    return json_response(snapshot(record), 200 if record.terminal else 202)


async def list_tasks(request: Request) -> Response:
    """``GET /api/tasks?ids=a,b`` (batch) or ``?status=&limit=&cursor=`` (paginated)."""
    store = _manager(request).store
    params = request.query_params
    if "ids" in params:
        ids = [i for i in params["ids"].split(",") if i]
        if not ids or len(ids) > MAX_LIST_LIMIT:
            raise ApiError(400, "bad_request", f"ids must list 1 to {MAX_LIST_LIMIT} task ids")
        # Another key's tasks are reported missing, as unknown ids are.
        records = await store.only_tenant(await store.get_many(ids), key_name(request))
        found = {r.task_id for r in records}
        return json_response(
            {"tasks": [snapshot(r) for r in records], "missing": [i for i in ids if i not in found]}
        )
    status = None
    if params.get("status"):
        try:
            status = TaskStatus(params["status"].upper())
        except ValueError as exc:
            allowed = ", ".join(s.value for s in TaskStatus)
            raise ApiError(400, "bad_request", f"status must be one of {allowed}") from exc
    limit = _int_param(params.get("limit"), "limit", 50, 1, MAX_LIST_LIMIT)
    try:
        records, cursor = await store.list_tasks(
            status, limit, params.get("cursor") or None, tenant=key_name(request)
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from exc
    return json_response({"tasks": [snapshot(r) for r in records], "nextCursor": cursor})


async def tasks_collection(request: Request) -> Response:
    """``/api/tasks``: one route for both methods, so a 405 names them both in ``Allow``."""
    if request.method == "POST":
        return await create_task(request)
    return await list_tasks(request)


routes = [
    Route("/api/tasks", tasks_collection, methods=["GET", "POST"]),
    Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/api/tasks/{task_id}/events", task_events, methods=["GET"]),
    Route("/api/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
]
