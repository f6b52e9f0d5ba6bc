"""Our log, read as A2A: a fold of a task's messages into A2A events and a ``Task`` snapshot.

The fold is the only place that knows both vocabularies. It is deterministic over the log, so
a stream resumed after ``seq`` N (any replica) feeds messages 1…N without emitting, takes the
``Task`` snapshot there, and then emits for N+1… exactly what the first stream emitted.

Mapping (DESIGN §3 → A2A v1.0):

- ``status`` RUNNING → status update ``working``; PENDING (a requeue) → ``submitted``;
  CANCELLED (the finish) → ``canceled``;
- text deltas (non-final frames whose payload ``result`` is text) → artifact chunks of the
  artifact ``messageId``: the first with ``append=false``, the rest ``append=true``; the
  message's final frame replaces the artifact with the full, authoritative text
  (``append=false, lastChunk=true``) — that is the answer;
- a final frame with a thought (``plan_thought``, ``tool_thought``, ``task``, ``plan``,
  ``tool_result``, ``task_summary``, tool payloads) → a ``working`` status update carrying an
  agent message (text, or a data part), ``metadata.messageType`` naming our type;
- ``result`` (the finish) → the answer artifact when no streamed message carried it, then
  ``completed``; ``error`` (the finish) → ``failed`` with the error's message.

A thought the model streamed token by token (DESIGN §3 "live text") is an artifact while it
streams, as nobody knows yet what it is; its final frame then carries
``metadata.messageType = "tool_thought"``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from a2a.server.events import Event
from a2a.types import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf.json_format import ParseDict
from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.protocol import TaskRecord
from gateway.protocol import TaskStatus as OurStatus

STATES: Mapping[OurStatus, TaskState] = {
    OurStatus.PENDING: TaskState.TASK_STATE_SUBMITTED,
    OurStatus.RUNNING: TaskState.TASK_STATE_WORKING,
    OurStatus.COMPLETED: TaskState.TASK_STATE_COMPLETED,
    OurStatus.FAILED: TaskState.TASK_STATE_FAILED,
    OurStatus.CANCELLED: TaskState.TASK_STATE_CANCELED,
}
"""Our task status → the A2A task state."""

ANSWER_TYPES = frozenset({"agent_stream", "result"})
PAYLOAD_FIELDS = {
    "plan_thought": "planThought",
    "plan": "plan",
    "task": "task",
    "tool_thought": "toolThought",
    "tool_result": "toolResult",
    "task_summary": "taskSummary",
    "agent_stream": "result",
}


def _timestamp(ms: int | None) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms or 0)
    return stamp


def _struct(fields: Mapping[str, Any]) -> Struct:
    struct = Struct()
    struct.update(dict(fields))
    return struct


def _part(payload: Any) -> Part:
    if isinstance(payload, str):
        return Part(text=payload)
    value = Value()
    ParseDict(payload, value)
    return Part(data=value)


class Projection:
    """The A2A view of one task, built by feeding its log messages in ``seq`` order."""

    def __init__(self, record: TaskRecord, context_id: str, history: list[Message]) -> None:
        self.task_id = record.task_id
        self.context_id = context_id
        self.history = history
        self.record = record
        self.state: TaskState = STATES[OurStatus.PENDING]
        self.status_message: Message | None = None
        self.status_time = record.created_at
        self.artifacts: dict[str, Artifact] = {}
        self.seq = 0
        self._answered = False

    # -- snapshot ---------------------------------------------------------------------------
    def task(self, history_length: int | None = None) -> Task:
        """The task as of the last message fed (``history_length``: the newest N messages)."""
        status = TaskStatus(state=self.state, timestamp=_timestamp(self.status_time))
        if self.status_message is not None:
            status.message.CopyFrom(self.status_message)
        history = self.history
        if history_length is not None:
            history = history[-history_length:] if history_length > 0 else []
        return Task(
            id=self.task_id,
            context_id=self.context_id,
            status=status,
            artifacts=list(self.artifacts.values()),
            history=history,
        )

    # -- the fold ---------------------------------------------------------------------------
    def feed(self, message: Mapping[str, Any]) -> list[Event]:
        """Fold one log message in; the A2A events it makes (maybe none)."""
        self.seq = int(message["seq"])
        kind = str(message.get("messageType", ""))
        if kind == "status":
            return self._status(message)
        if kind == "result":
            return self._result(message)
        if kind == "error":
            error = message.get("error") or {}
            text = f"{error.get('code', 'error')}: {error.get('message', '')}"
            return [self._set_state(TaskState.TASK_STATE_FAILED, message, text)]
        if not message.get("isFinal", True):
            delta = message.get("result")
            return [self._chunk(message, delta)] if isinstance(delta, str) else []
        if str(message.get("messageId")) in self.artifacts:
            return [self._last_chunk(message, kind)]
        if kind == "agent_stream":  # an answer that came in one piece
            return [self._last_chunk(message, kind)]
        payload = message.get(PAYLOAD_FIELDS.get(kind, ""), message.get("resultMap"))
        if payload is None:
            return []
        return [self._thought(message, kind, payload)]

    def _status(self, message: Mapping[str, Any]) -> list[Event]:
        try:
            status = OurStatus(str(message.get("status")))
        except ValueError:
            return []
        reason = message.get("reason")
        return [self._set_state(STATES[status], message, str(reason) if reason else None)]

    def _result(self, message: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        text = message.get("result")
        if not self._answered and isinstance(text, str) and text:
            artifact = Artifact(artifact_id="answer", name="answer", parts=[Part(text=text)])
            self.artifacts["answer"] = artifact
            self._answered = True
            events.append(self._artifact_event(artifact, append=False, last=True))
        events.append(self._set_state(TaskState.TASK_STATE_COMPLETED, message, None))
        return events

    def _agent_message(self, message: Mapping[str, Any], parts: list[Part], **meta: Any) -> Message:
        return Message(
            message_id=str(message.get("messageId") or uuid.uuid4().hex),
            context_id=self.context_id,
            task_id=self.task_id,
            role=Role.ROLE_AGENT,
            parts=parts,
            metadata=_struct({"seq": self.seq, **meta}),
        )

    def _set_state(
        self, state: TaskState, message: Mapping[str, Any], text: str | None
    ) -> TaskStatusUpdateEvent:
        self.state = state
        self.status_time = int(message.get("messageTime") or 0)
        self.status_message = None
        if text:
            self.status_message = self._agent_message(message, [Part(text=text)])
        status = TaskStatus(state=state, timestamp=_timestamp(self.status_time))
        if self.status_message is not None:
            status.message.CopyFrom(self.status_message)
        return TaskStatusUpdateEvent(
            task_id=self.task_id, context_id=self.context_id, status=status
        )

    def _thought(self, message: Mapping[str, Any], kind: str, payload: Any) -> Event:
        self.status_time = int(message.get("messageTime") or 0)
        self.status_message = self._agent_message(message, [_part(payload)], messageType=kind)
        status = TaskStatus(state=self.state, timestamp=_timestamp(self.status_time))
        status.message.CopyFrom(self.status_message)
        return TaskStatusUpdateEvent(
            task_id=self.task_id, context_id=self.context_id, status=status
        )

    def _chunk(self, message: Mapping[str, Any], delta: str) -> Event:
        artifact_id = str(message.get("messageId"))
        chunk = Artifact(artifact_id=artifact_id, name="answer", parts=[Part(text=delta)])
        existing = self.artifacts.get(artifact_id)
        if existing is None:
            self.artifacts[artifact_id] = Artifact()
            self.artifacts[artifact_id].CopyFrom(chunk)
            return self._artifact_event(chunk, append=False, last=False)
        existing.parts[0].text += delta
        return self._artifact_event(chunk, append=True, last=False)

    def _last_chunk(self, message: Mapping[str, Any], kind: str) -> Event:
        artifact_id = str(message.get("messageId"))
        payload = message.get(PAYLOAD_FIELDS.get(kind, ""), message.get("resultMap"))
        artifact = Artifact(
            artifact_id=artifact_id,
            name="answer" if kind in ANSWER_TYPES else kind,
            parts=[_part(payload if payload is not None else "")],
            metadata=_struct({"messageType": kind}),
        )
        self.artifacts[artifact_id] = artifact
        if kind in ANSWER_TYPES:
            self._answered = True
        return self._artifact_event(artifact, append=False, last=True)

    def _artifact_event(self, artifact: Artifact, *, append: bool, last: bool) -> Event:
        return TaskArtifactUpdateEvent(
            task_id=self.task_id,
            context_id=self.context_id,
            artifact=artifact,
            append=append,
            last_chunk=last,
        )


__all__ = ["STATES", "Projection"]
