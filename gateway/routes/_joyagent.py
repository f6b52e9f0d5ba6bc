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
  on every other packet (``BaseAgentResponseHandler`` / ``EventResult``);
- a ``plan`` carries ``stages``, which genie-backend's ``Plan`` lacks but the UI groups the plan
  box by (one heading per stage, the steps numbered under it): ours are one stage, the plan's
  title (the steps themselves when it has none), so the box reads "title: 1. … 2. …".

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


def _stages(plan: dict[str, Any]) -> list[str]:
    """The stage of each step: the plan's title, else the step itself (never an empty name)."""
    steps = [str(step) for step in plan.get("steps") or ()]
    title = str(plan.get("title") or "").strip()
    return [title] * len(steps) if title else steps


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
            response["plan"] = {"stages": _stages(response["plan"]), **response["plan"]}
        response["finish"] = bool(message.get("finish"))
        if message.get("ext"):
            response["ext"] = message["ext"]
        return response


class EventProjector:
    """Turns AgentResponses into ``eventData`` as genie-backend's response handler does.

    Where our messages differ from genie-backend's, what the UI shows is kept as on JoyAgent
    (deep-think only; ReAct has no plan and no step summary):

    - a ``plan`` update before the first step's ``task`` updates the plan box (a top-level
      ``plan`` event, as the first plan), since it belongs to no step yet; genie-backend's
      first plan already has the first step in progress;
    - genie-backend moves the plan on once between steps (``Plan.stepPlan``: this step
      completed, the next in progress), an item at the end of the step's group that names the
      step completed. Ours sends two updates there, the completion and then the start of the
      next step, which would make a second item in the finished step's group. So an update
      that leaves the plan between steps (a step completed, one not started, none in progress)
      is held until the next response: an update that starts the next step takes its place
      (one item; the plan box shows the step in progress), anything else sends it first;
    - a step's answer streams live as its thought (``AgentResponses``); its ``task_summary``,
      whose text that settled thought (same ``messageId``) already shows, keeps only its
      files, so the answer appears once, as genie-backend's executor shows it once.
    """

    def __init__(self, react_mode: bool) -> None:
        self._react_mode = react_mode
        self._task_id: str | None = None
        self._task_order = 1
        self._orders: dict[str, int] = {}
        self._held: dict[str, Any] | None = None  # a plan update between two steps
        self._thought: tuple[str, str] | None = None  # the last settled thought: (id, text)

    def _order(self, key: str) -> int:
        self._orders[key] = self._orders.get(key, 0) + 1
        return self._orders[key]

    def _task(self, renew: bool = False) -> tuple[str, int]:
        if renew or self._task_id is None:
            self._task_id, self._task_order = str(uuid.uuid4()), 1
        order, self._task_order = self._task_order, self._task_order + 1
        return self._task_id, order

    def events(self, response: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The ``(AgentResponse, EventMessage)`` pairs to send for one AgentResponse, in order
        (none while a plan update is held, two when a held one goes first)."""
        sent = []
        held, self._held = self._held, None
        if held is not None and response["messageType"] != "plan":
            sent.append((held, self.event(held)))
        if self._between_steps(response):
            self._held = response
            return sent
        shown = self._shown(response)
        sent.append((shown, self.event(shown)))
        return sent

    def _between_steps(self, response: dict[str, Any]) -> bool:
        plan = response.get("plan")
        if response["messageType"] != "plan" or self._task_id is None or self._react_mode:
            return False
        status = plan.get("stepStatus") if isinstance(plan, dict) else None
        status = status if isinstance(status, list) else []
        return "in_progress" not in status and {"completed", "not_started"} <= set(status)

    def _shown(self, response: dict[str, Any]) -> dict[str, Any]:
        """``response`` as the UI shows it: a summary's text already shown as its thought
        is not repeated."""
        kind, message_id = response["messageType"], response["messageId"]
        if kind == "tool_thought" and response["isFinal"]:
            self._thought = (message_id, str(response.get("toolThought", "")))
        elif kind == "task_summary" and self._thought == (message_id, response.get("taskSummary")):
            result_map = {**response["resultMap"], "taskSummary": ""}
            return {**response, "taskSummary": "", "resultMap": result_map}
        return response

    def event(self, response: dict[str, Any]) -> dict[str, Any]:
        """The ``EventMessage`` of one AgentResponse."""
        kind = response["messageType"]
        event: dict[str, Any] = {"messageId": response["messageId"]}
        # ReAct: every packet goes under the one task id (the UI handles nothing else).
        if kind == "plan_thought" and not self._react_mode:
            event.update(messageType=kind, messageOrder=self._order(kind), resultMap=response)
            return event
        if kind == "plan" and self._task_id is None and not self._react_mode:
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
    record: TaskRecord, response: dict[str, Any], event: dict[str, Any]
) -> dict[str, Any]:
    """The UI's ``GptProcessResult`` packet of one AgentResponse and its ``eventData``."""
    result_map = {"agentType": str(record.agent_type), "multiAgent": {}, "eventData": event}
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
