"""JoyAgent's view of a task's messages: genie-backend's ``AgentResponse`` and the UI's packets.

What genie-backend sends, and its UI relies on (``joyagent-compat.md``), reproduced here:

- every ``AgentResponse`` carries a ``resultMap`` object, at least ``{agentType}`` (its
  ``SSEPrinter``); the UI reads fields of it without a null check;
- ``task_summary`` carries ``resultMap: {taskSummary, fileList}`` (a step's files) and
  ``taskSummary``; ``result`` carries ``resultMap: {taskSummary, fileList, agentType}``;
- model text streams as ``tool_thought`` (``setStreamMessageType("tool_thought")``): every
  model turn, the answer's too, is one growing "thought" item, merged by ``messageId``; the
  answer reaches the UI as the ``result``. So our ``agent_stream`` frames become
  ``tool_thought`` frames of the same ``messageId``, and the deltas of a ``task_summary`` (a
  plan step's answer, streamed live) do too; its final frame settles that thought and then
  gives the ``task_summary`` item. Under DESIGN §3's live text a turn's deltas may already be
  ``tool_thought`` frames whose final frame names the answer type: the same rules apply;
- a streamed ``deep_search``'s final frame carries ``answer: ""`` (genie-tool's does; the UI
  appends every frame's answer);
- the ``tool_result`` of a tool that printed its own message (code, search, report) is not
  sent: genie-backend sends ``tool_result`` only for other tools (``ReactImplAgent.act``);
- ``messageOrder`` counts 1, 2, 3 … per ``taskId:messageType`` for its stream types and is 1
  on every other packet (``BaseAgentResponseHandler`` / ``EventResult``).

Deliberate addition: a task that fails or is cancelled ends with a ``result`` message whose
text says so, and ``ext`` carries its status (JoyAgent has no error events).
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.protocol import TaskRecord, now_ms

__all__ = ["STREAM_TYPES", "AgentResponses", "EventProjector", "gpt_packet", "heartbeat_packet"]

STREAM_TYPES = frozenset(
    {"html", "markdown", "deep_search", "multimodalagent_tool", "tool_thought", "data_analysis"}
)
"""genie-backend's stream task message types (``EventResult.streamTaskMessageType``)."""

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
_TOOL_PAYLOADS = frozenset({"code", "markdown", "html", "deep_search", "file"})  # in resultMap
_MODEL_TEXT = {
    "agent_stream": "result",
    "task_summary": "taskSummary",
    "tool_thought": "toolThought",
}
_SKIPPED = frozenset({"status", "reset"})  # native-only messages (a terminal status is mapped)


def _terminal(message: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` message of a task that ended with an error or was cancelled."""
    if message["messageType"] == "error":
        error = message.get("error") or {}
        code, text = str(error.get("code", "internal")), str(error.get("message", "failed"))
        text, ext = f"The task failed ({code}): {text}", {"status": "FAILED", "errorCode": code}
    else:
        text, ext = "The task was cancelled.", {"status": str(message.get("status", "CANCELLED"))}
    return {
        **message,
        "messageType": "result",
        "result": text,
        "isFinal": True,
        "resultMap": {"taskSummary": text, "fileList": []},
        "ext": ext,
    }


class AgentResponses:
    """Turns one task's native messages, in log order, into genie-backend ``AgentResponse``\\ s.

    One per stream: it remembers which messages streamed model text (to settle their thought)
    and the files written since the current plan step began (a ``task_summary``'s
    ``fileList``).
    """

    def __init__(self, agent_type: int) -> None:
        self._agent_type = agent_type
        self._streamed: set[str] = set()  # messageIds whose text deltas were shown
        self._step_files: list[dict[str, Any]] = []
        self._tool_shown = False  # a tool printed its own message since the last tool_result

    def project(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The AgentResponses of one native message (none for native-only messages)."""
        kind = message["messageType"]
        if message.get("finish") and kind != "result":
            message, kind = _terminal(message), "result"
        elif kind in _SKIPPED:
            return []
        if kind == "task":
            self._step_files = []
        elif kind in _TOOL_PAYLOADS:
            self._tool_shown = True
            if not message.get("isFinal"):
                self._streamed.add(message["messageId"])
            else:
                self._add_files(message.get("resultMap"))
                message = self._settled_search(message)
        elif kind == "tool_result":
            shown, self._tool_shown = self._tool_shown, False
            if shown:  # as genie-backend: its own tools' work is their message, not a tool item
                return []
        text_field = _MODEL_TEXT.get(kind)
        if text_field is not None and isinstance(message.get(text_field), str):
            return self._model_text(message, kind, message[text_field])
        return [self._response(message)]

    def _model_text(self, message: dict[str, Any], kind: str, text: str) -> list[dict[str, Any]]:
        message_id = message["messageId"]
        final = bool(message.get("isFinal"))
        thought = {**message, "messageType": "tool_thought", "toolThought": text}
        for name in ("result", "taskSummary"):
            thought.pop(name, None)
        if not final:
            self._streamed.add(message_id)
            return [self._response(thought)]
        streamed = message_id in self._streamed
        self._streamed.discard(message_id)
        if kind != "task_summary":
            return [self._response(thought)]
        files = list(self._step_files)
        summary = {**message, "resultMap": {"taskSummary": text, "fileList": files}}
        head = [self._response(thought)] if streamed else []
        return [*head, self._response(summary)]

    def _settled_search(self, message: dict[str, Any]) -> dict[str, Any]:
        """A streamed ``deep_search``'s final frame without the answer the UI already has.

        The UI appends every frame's ``answer``, the final one's too; genie-tool's streamed
        final frame has ``answer: ""``. A final frame read without its deltas keeps it all.
        """
        payload = message.get("resultMap")
        streamed = message["messageId"] in self._streamed
        self._streamed.discard(message["messageId"])
        if message["messageType"] != "deep_search" or not streamed or not isinstance(payload, dict):
            return message
        return {**message, "resultMap": {**payload, "answer": ""}}

    def _add_files(self, payload: Any) -> None:
        infos = payload.get("fileInfo") if isinstance(payload, dict) else None
        for info in infos if isinstance(infos, list) else ():
            if isinstance(info, dict):
                name = info.get("fileName")
                self._step_files = [f for f in self._step_files if f.get("fileName") != name]
                self._step_files.append(info)

    def _response(self, message: dict[str, Any]) -> dict[str, Any]:
        """``AgentResponse`` fields of ``message`` (null ones omitted), with its ``resultMap``."""
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
        payload = response.get("resultMap")
        result_map = dict(payload) if isinstance(payload, dict) else {}
        result_map["agentType"] = self._agent_type
        response["resultMap"] = result_map
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
        order = self._order(f"{task_id}:{kind}") if kind in STREAM_TYPES else 1
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
    record: TaskRecord, response: dict[str, Any], projector: EventProjector
) -> dict[str, Any]:
    """The UI's ``GptProcessResult`` packet of one AgentResponse."""
    result_map = {
        "agentType": str(record.agent_type),
        "multiAgent": {},
        "eventData": projector.event(response),
    }
    if not response["finish"]:
        return _packet(record, resultMap=result_map)
    failed = bool(response.get("ext", {}).get("status"))
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
