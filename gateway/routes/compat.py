"""JoyAgent-JDGenie compatible endpoints (``joyagent-compat.md``), as views over a durable task.

``POST /web/api/v1/gpt/queryAgentStreamIncr`` (the UI's endpoint), ``POST /AutoAgent`` (the
agent endpoint) and ``GET /data/allModels``. Both streams submit a task through the manager and
read its log, exactly like the native API: a client that goes away does not stop the task, which
stays readable on ``/api/tasks/{id}`` (its id is in the ``X-Task-Id`` header and in ``traceId``).

Wire format, as JoyAgent's: ``data:<json>`` frames (no space, no ``id:``/``event:`` lines, no
``[DONE]``); the stream closes right after the last message of the task. Heartbeats follow a
fixed clock (every ``compat_heartbeat_interval`` seconds, the first one after one interval):
the bare frame ``data:heartbeat`` on ``/AutoAgent``, a heartbeat packet on the UI endpoint.

Deliberate additions (JoyAgent has no error events): a task that fails or is cancelled ends with
a ``result`` message whose text says so, ``ext`` carries its status, and the UI packet is
``finished`` with ``status: "failed"`` and ``errorMsg``, so the UI stops waiting. The UI
endpoint's ``eventData`` follows genie-backend's ``BaseAgentResponseHandler`` (task ids, orders);
in ReAct mode a ``task`` message does not start a new task id (the UI supports only one).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Send

from gateway.protocol import AgentRequest, StoredMessage, TaskRecord, now_ms
from gateway.routes.errors import ApiError, json_response, read_model, validation_message
from gateway.routes.sse import LogStream
from gateway.routes.tasks import submit
from gateway.store import TaskNotFound

__all__ = ["EventProjector", "agent_response", "heartbeat_packet", "routes"]

HEARTBEAT_FRAME = b"data:heartbeat\n\n"
_RESPONSE_FIELDS = (
    "planThought",
    "plan",
    "task",
    "taskSummary",
    "toolThought",
    "toolResult",
    "resultMap",
    "result",
)
_STREAM_TASK_TYPES = frozenset(
    {"html", "markdown", "deep_search", "multimodalagent_tool", "tool_thought", "data_analysis"}
)
_SKIPPED = frozenset({"status", "reset"})  # native-only messages (a terminal status is mapped)


class GptQueryReq(BaseModel):
    """The UI's ``GptQueryReq``; fields it sends that we do not use are ignored."""

    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, max_length=100_000)
    session_id: str | None = Field(default=None, alias="sessionId")
    request_id: str | None = Field(default=None, alias="requestId", min_length=1, max_length=128)
    deep_think: int | None = Field(default=None, alias="deepThink", ge=0, le=1)
    output_style: str | None = Field(default=None, alias="outputStyle")


class AutoAgentReq(BaseModel):
    """genie-backend's ``AgentRequest`` for ``/AutoAgent``; prompts and history are ignored."""

    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, max_length=100_000)
    agent_type: StrictInt = Field(default=5, alias="agentType", ge=0, le=99)
    request_id: str | None = Field(default=None, alias="requestId", min_length=1, max_length=128)


# -- mapping ---------------------------------------------------------------------------------
def _terminal_text(message: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The answer text and ``ext`` of a task that ended without a result."""
    if message["messageType"] == "error":
        error = message.get("error") or {}
        code, text = str(error.get("code", "internal")), str(error.get("message", "failed"))
        return f"The task failed ({code}): {text}", {"status": "FAILED", "errorCode": code}
    return "The task was cancelled.", {"status": str(message.get("status", "CANCELLED"))}


def agent_response(message: dict[str, Any]) -> dict[str, Any] | None:
    """A native message as genie-backend's ``AgentResponse`` (null fields omitted).

    ``None`` for native-only messages; the ``error`` / cancelled ``status`` that ends a task
    becomes a final ``result`` message.
    """
    kind = message["messageType"]
    if message.get("finish") and kind != "result":
        text, ext = _terminal_text(message)
        message = {**message, "messageType": "result", "result": text, "isFinal": True}
        message["resultMap"] = {"taskSummary": text, "fileList": []}
        message["ext"] = ext
    elif kind in _SKIPPED:
        return None
    response: dict[str, Any] = {
        "requestId": message.get("requestId"),
        "messageId": message["messageId"],
        "isFinal": bool(message.get("isFinal")),
        "messageType": message["messageType"],
        "messageTime": str(message.get("messageTime", now_ms())),
    }
    for name in _RESPONSE_FIELDS:
        if message.get(name) is not None:
            response[name] = message[name]
    if isinstance(response.get("plan"), dict):
        plan = response["plan"]
        response["plan"] = {"stages": [""] * len(plan.get("steps") or ()), **plan}
    response["finish"] = bool(message.get("finish"))
    if message.get("ext"):
        response["ext"] = message["ext"]
    return response


class EventProjector:
    """Turns AgentResponses into ``eventData`` as genie-backend's response handler does."""

    def __init__(self, react_mode: bool) -> None:
        self._react_mode = react_mode
        self._task_id: str | None = None
        self._task_order = 1
        self._plan_seen = False
        self._orders: dict[str, int] = {}

    def _order(self, key: str) -> int:
        self._orders[key] = self._orders.get(key, 0) + 1
        return self._orders[key]

    def _task(self, renew: bool = False) -> tuple[str, int]:
        if renew or self._task_id is None:
            self._task_id, self._task_order = str(uuid.uuid4()), 1
        order, self._task_order = self._task_order, self._task_order + 1
        return self._task_id, order

    def event(self, response: dict[str, Any]) -> dict[str, Any]:
        """The ``EventMessage`` of one AgentResponse."""
        kind = response["messageType"]
        event: dict[str, Any] = {"messageId": response["messageId"]}
        # ReAct: every packet goes under the one task id (the UI handles nothing else).
        if kind == "plan_thought" and not self._react_mode:
            event.update(messageType=kind, messageOrder=self._order(kind), resultMap=response)
            return event
        if kind == "plan" and not self._plan_seen and not self._react_mode:
            self._plan_seen = True
            event.update(messageType="plan", messageOrder=1, resultMap=response["plan"])
            return event
        task_id, task_order = self._task(renew=kind == "task" and not self._react_mode)
        order = self._order(f"{task_id}:{kind}") if kind in _STREAM_TASK_TYPES else 1
        event.update(taskId=task_id, taskOrder=task_order, messageType="task")
        event.update(messageOrder=order, resultMap=response)
        return event


def _packet(record: TaskRecord, **fields: Any) -> dict[str, Any]:
    packet: dict[str, Any] = {
        "status": "running",
        "response": "",
        "responseAll": "",
        "finished": False,
        "useTimes": max(0, now_ms() - record.created_at),
        "useTokens": 0,
        "resultMap": None,
        "responseType": "text",
        "traceId": record.task_id,
        "reqId": record.request_id,
        "encrypted": False,
        "query": record.query,
        "messages": [],
        "packageType": "result",
        "errorMsg": "",
    }
    packet.update(fields)
    return packet


def heartbeat_packet(record: TaskRecord) -> dict[str, Any]:
    """The UI endpoint's heartbeat: ``reqId`` set, no ``resultMap``, other fields empty."""
    return _packet(
        record, status="success", useTimes=0, traceId="", query="", packageType="heartbeat"
    )


def gpt_packet(
    record: TaskRecord, message: dict[str, Any], projector: EventProjector
) -> dict[str, Any] | None:
    """The ``GptProcessResult`` packet of one native message (``None``: nothing to send)."""
    response = agent_response(message)
    if response is None:
        return None
    result_map = {
        "agentType": str(record.agent_type),
        "multiAgent": {},
        "eventData": projector.event(response),
    }
    if not response["finish"]:
        return _packet(record, resultMap=result_map)
    failed = message["messageType"] != "result"
    text = str(response.get("result") or "")
    return _packet(
        record,
        status="failed" if failed else "success",
        finished=True,
        response="" if failed else text,
        responseAll="" if failed else text,
        resultMap=result_map,
        errorMsg=text if failed else "",
    )


# -- streaming -------------------------------------------------------------------------------
def _frame(value: Any) -> bytes:
    return b"data:" + orjson.dumps(value) + b"\n\n"


class CompatStream(LogStream):
    """A task's log from the start as JoyAgent frames, with clocked heartbeats.

    The native stream's machinery (the host that serves it off the middleware chain, the
    disconnect watch, the shared send time limit) with JoyAgent's framing. A client that leaves
    stops only its reader, never the task; a drain does not end it early either: JoyAgent
    clients cannot resume, so the stream follows the task (through the store, wherever it runs
    on) for as long as this process serves.
    """

    __slots__ = ("heartbeat", "interval", "to_frame")

    def __init__(
        self,
        request: Request,
        record: TaskRecord,
        render: Callable[[dict[str, Any]], bytes | None],
        heartbeat: bytes,
    ) -> None:
        state = request.app.state
        super().__init__(
            state.store,
            record.task_id,
            0,
            state.settings,
            state.metrics,
            headers={"X-Task-Id": record.task_id},
        )
        self.to_frame = render
        self.heartbeat = heartbeat
        self.interval: float = state.settings.compat_heartbeat_interval

    async def _pump(self, send: Send) -> None:
        clock = self._loop.time
        cursor = self.after
        next_beat = clock() + self.interval
        while True:
            wait = next_beat - clock()
            batch: list[StoredMessage] = []
            if wait > 0:
                try:
                    batch = await self.store.tail(self.task_id, cursor, wait)
                except TaskNotFound:
                    return  # expired: end the stream
            frames = []
            for message in batch:
                cursor = message.seq
                frame = self.to_frame(message.json())
                if frame is not None:
                    frames.append(frame)
                if message.finish:
                    await self._finish(send, b"".join(frames))
                    return
            if frames:
                await self._send(send, b"".join(frames))
            if clock() >= next_beat:
                await self._send(send, self.heartbeat)
                next_beat = max(next_beat + self.interval, clock())


# -- endpoints -------------------------------------------------------------------------------
async def _submit(
    request: Request, query: str, agent_type: int, request_id: str | None
) -> TaskRecord:
    try:
        agent_request = AgentRequest(query=query, agentType=agent_type, requestId=request_id)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", validation_message(exc)) from exc
    # A retried request (same requestId, same caller) joins its first run instead of starting
    # a second one; ``submit`` scopes the key to the caller's API key.
    key = f"compat:{request.url.path}:{request_id}" if request_id else None
    return await submit(request, agent_request, key, key_label="requestId")


async def query_agent_stream_incr(request: Request) -> Response:
    """``POST /web/api/v1/gpt/queryAgentStreamIncr``: ``deepThink`` 1 plans, 0 runs ReAct."""
    body: GptQueryReq = await read_model(request, GptQueryReq)
    agent_type = 3 if body.deep_think == 1 else 5
    record = await _submit(request, body.query, agent_type, body.request_id)
    projector = EventProjector(react_mode=agent_type == 5)

    def render(message: dict[str, Any]) -> bytes | None:
        packet = gpt_packet(record, message, projector)
        return None if packet is None else _frame(packet)

    return CompatStream(request, record, render, _frame(heartbeat_packet(record)))  # type: ignore[return-value]


async def auto_agent(request: Request) -> Response:
    """``POST /AutoAgent``: the task's messages as ``AgentResponse`` frames."""
    body: AutoAgentReq = await read_model(request, AutoAgentReq)
    record = await _submit(request, body.query, body.agent_type, body.request_id)

    def render(message: dict[str, Any]) -> bytes | None:
        response = agent_response(message)
        return None if response is None else _frame(response)

    return CompatStream(request, record, render, HEARTBEAT_FRAME)  # type: ignore[return-value]


async def all_models(request: Request) -> Response:
    """``GET /data/allModels``: the UI only needs a successful, empty list."""
    return json_response({"code": 200, "data": []})


routes = [
    Route("/web/api/v1/gpt/queryAgentStreamIncr", query_agent_stream_incr, methods=["POST"]),
    Route("/AutoAgent", auto_agent, methods=["POST"]),
    Route("/data/allModels", all_models, methods=["GET"]),
]
