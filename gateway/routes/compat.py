"""JoyAgent-JDGenie compatible endpoints (``joyagent-compat.md``), as views over a durable task.

``POST /web/api/v1/gpt/queryAgentStreamIncr`` (the UI's endpoint), ``POST /AutoAgent`` (the
agent endpoint) and ``GET /data/allModels``. Both streams submit a task through the manager and
read its log, exactly like the native API: a client that goes away does not stop the task, which
stays readable on ``/api/tasks/{id}`` (its id is in the ``X-Task-Id`` header and in ``traceId``).

Wire format, as JoyAgent's: ``data:<json>`` frames (no space, no ``id:``/``event:`` lines, no
``[DONE]``); the stream closes right after the last message of the task. Heartbeats follow a
fixed clock (every ``compat_heartbeat_interval`` seconds, the first one after one interval):
the bare frame ``data:heartbeat`` on ``/AutoAgent``, a heartbeat packet on the UI endpoint.

What is sent is genie-backend's own projection of the task's messages (``_joyagent``): a
``resultMap`` on every response, model text as ``tool_thought``, the answer as the ``result``,
``eventData`` task ids and orders as its ``BaseAgentResponseHandler`` gives them (in ReAct mode a
``task`` message does not start a new task id: the UI supports only one; in deep-think each step
gets one plan item and its answer is shown once, see ``EventProjector``). Deliberate addition
(JoyAgent has no error events): a task that fails or is cancelled ends with a ``result``
message whose text says so, and the UI packet is ``finished`` with ``status: "failed"`` and
``errorMsg``, so the UI stops waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Send

from gateway.protocol import AgentRequest, StoredMessage, TaskRecord
from gateway.routes._joyagent import AgentResponses, EventProjector, gpt_packet, heartbeat_packet
from gateway.routes.errors import ApiError, json_response, read_model, validation_message
from gateway.routes.sse import LogStream
from gateway.routes.tasks import submit
from gateway.store import TaskNotFound

__all__ = ["routes"]

HEARTBEAT_FRAME = b"data:heartbeat\n\n"


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
        render: Callable[[dict[str, Any]], bytes],
        heartbeat: bytes,
    ) -> None:
        state = request.app.state
        super().__init__(
            state.store,
            record.task_id,
            0,
            state.stream_settings,
            state.metrics,
            headers={"X-Task-Id": record.task_id},
        )
        self.to_frame = render
        self.heartbeat = heartbeat
        self.interval: float = state.stream_settings.compat_heartbeat_interval

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
                if frame:
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
    responses = AgentResponses(agent_type)
    projector = EventProjector(react_mode=agent_type == 5)

    def render(message: dict[str, Any]) -> bytes:
        return b"".join(
            _frame(gpt_packet(record, shown, event))
            for response in responses.project(message)
            for shown, event in projector.events(response)
        )

    return CompatStream(request, record, render, _frame(heartbeat_packet(record)))  # type: ignore[return-value]


async def auto_agent(request: Request) -> Response:
    """``POST /AutoAgent``: the task's messages as ``AgentResponse`` frames."""
    body: AutoAgentReq = await read_model(request, AutoAgentReq)
    record = await _submit(request, body.query, body.agent_type, body.request_id)
    responses = AgentResponses(body.agent_type)

    def render(message: dict[str, Any]) -> bytes:
        return b"".join(_frame(response) for response in responses.project(message))

    return CompatStream(request, record, render, HEARTBEAT_FRAME)  # type: ignore[return-value]


async def all_models(request: Request) -> Response:
    """``GET /data/allModels``: the UI only needs a successful, empty list."""
    return json_response({"code": 200, "data": []})


routes = [
    Route("/web/api/v1/gpt/queryAgentStreamIncr", query_agent_stream_incr, methods=["POST"]),
    Route("/AutoAgent", auto_agent, methods=["POST"]),
    Route("/data/allModels", all_models, methods=["GET"]),
]
