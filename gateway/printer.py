"""The ``Printer``: an agent's only output (DESIGN §6). Every call appends to the task's log."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from time import time_ns
from typing import Any

import orjson

from gateway.protocol import PAYLOAD_FIELDS, StoredMessage, now_ms
from gateway.store import StreamStore


class Outcome:
    """What the agent reported as its result; written by the task runner as the last message."""

    __slots__ = ("file_list", "result", "task_summary")

    def __init__(self, result: str, task_summary: str | None, file_list: list[Any]) -> None:
        self.result = result
        self.task_summary = task_summary
        self.file_list = file_list


class StreamHandle:
    """One streamed message: ``delta`` frames, then one ``final`` frame with the full content."""

    __slots__ = ("_printer", "closed", "message_id", "message_type")

    def __init__(self, printer: Printer, message_type: str) -> None:
        self._printer = printer
        self.message_type = message_type
        self.message_id = uuid.uuid4().hex
        self.closed = False

    async def delta(self, payload: Any, **extra: Any) -> StoredMessage:
        """Append a non-final frame carrying a delta."""
        if self.closed:
            raise RuntimeError("stream already finalised")
        return await self._printer.send(
            self.message_type, payload, message_id=self.message_id, is_final=False, **extra
        )

    async def final(self, payload: Any, **extra: Any) -> StoredMessage:
        """Append the final frame carrying the full content; the handle is then closed."""
        self.closed = True
        return await self._printer.send(
            self.message_type, payload, message_id=self.message_id, is_final=True, **extra
        )


class Printer:
    """Writes typed messages of one task to its log; never touches a socket."""

    def __init__(
        self,
        store: StreamStore,
        task_id: str,
        request_id: str,
        on_append: Callable[[StoredMessage], None] | None = None,
    ) -> None:
        self.store = store
        self.task_id = task_id
        self.request_id = request_id
        self._on_append = on_append
        self.outcome: Outcome | None = None
        self._answers: dict[str, list[str]] = {}  # streamed answer parts per messageId
        self._delta_templates: dict[str, bytes] = {}  # text_delta_now's JSON per messageId

    def body(
        self, message_type: str, payload: Any, message_id: str | None, is_final: bool, **extra: Any
    ) -> dict[str, Any]:
        """The message body (without ``seq`` and ``finish``, which the log adds)."""
        field = _payload_field(message_type)
        body = {
            **self._head(message_id or uuid.uuid4().hex, message_type),
            "messageTime": now_ms(),
            "isFinal": is_final,
            field: payload,
        }
        body.update(extra)
        return body

    async def send(
        self,
        message_type: str,
        payload: Any,
        *,
        message_id: str | None = None,
        is_final: bool = True,
        **extra: Any,
    ) -> StoredMessage:
        """Append one message; ``payload`` goes in the field its type names (DESIGN §3)."""
        body = self.body(message_type, payload, message_id, is_final, **extra)
        message = await self.store.append(self.task_id, body)
        self._sent(message, body, payload)
        return message

    def send_now(self, message_type: str, payload: Any) -> StoredMessage | None:
        """``send`` of a final message without waiting, where the store can append so
        (``append_now``); None where it cannot: then nothing was sent, ``send`` it."""
        body = self.body(message_type, payload, None, True)
        message = self.store.append_now(self.task_id, body)
        if message is not None:
            self._sent(message, body, payload)
        return message

    def text_delta_now(
        self, message_id: str, text: str, message_type: str = "agent_stream"
    ) -> StoredMessage | None:
        """``send(message_type, text, message_id=message_id, is_final=False)`` (the same
        message, byte for byte) without waiting, where the store can append so
        (``append_now``); None where it cannot: then nothing was sent, ``send`` it. Its JSON is
        filled into a template encoded once per message: a model turn sends one per token."""
        template = self._delta_templates.get(message_id)
        if template is None:
            template = self._delta_template(message_id, message_type)
        encoded = template % (
            time_ns() // 1_000_000,  # now_ms(), without the call
            orjson.dumps(text),
        )
        message = self.store.append_now(self.task_id, encoded)
        if message is not None:
            if message_type == "agent_stream":
                answer = self._answers.get(message_id)
                if answer is None:
                    self._answers[message_id] = [text]
                else:
                    answer.append(text)
            if self._on_append is not None:
                self._on_append(message)
        return message

    def _delta_template(self, message_id: str, message_type: str) -> bytes:
        """The JSON of a text delta of ``message_id`` with ``%d`` for the time, ``%s`` for the
        text (the fields in the order :meth:`body` puts them)."""
        field = _payload_field(message_type)
        head = orjson.dumps(self._head(message_id, message_type))[:-1].replace(b"%", b"%%")
        template = b'%s,"messageTime":%%d,"isFinal":false,%s:%%s,"finish":false}' % (
            head,
            orjson.dumps(field),
        )
        self._delta_templates[message_id] = template
        return template

    def _head(self, message_id: str, message_type: str) -> dict[str, Any]:
        """The fields every message body opens with, in their order."""
        return {
            "taskId": self.task_id,
            "requestId": self.request_id,
            "messageId": message_id,
            "messageType": message_type,
        }

    def _sent(self, message: StoredMessage, body: dict[str, Any], payload: Any) -> None:
        if body["messageType"] == "agent_stream" and isinstance(payload, str):
            if body["isFinal"]:  # the final frame carries the whole text
                self._answers[body["messageId"]] = [payload]
            else:
                self._answers.setdefault(body["messageId"], []).append(payload)
        self.notify(message)

    def notify(self, message: StoredMessage) -> None:
        """Report an appended message to the observer (metrics)."""
        if self._on_append is not None:
            self._on_append(message)

    def stream(self, message_type: str) -> StreamHandle:
        """Start a streamed message of ``message_type`` with one stable ``messageId``."""
        return StreamHandle(self, message_type)

    def result(
        self, result: str, *, task_summary: str | None = None, file_list: list[Any] | None = None
    ) -> None:
        """Record the task's final answer; it becomes the ``result`` message with ``finish``."""
        self.outcome = Outcome(result, task_summary, list(file_list or []))

    @property
    def partial_answer(self) -> str:
        """The streamed answer so far (kept as the result of a task that did not complete)."""
        return "".join("".join(parts) for parts in self._answers.values())


def _payload_field(message_type: str) -> str:
    """The field a message of ``message_type`` carries its payload in (DESIGN §3)."""
    field = PAYLOAD_FIELDS.get(message_type)
    if field is None:
        raise ValueError(f"unknown messageType {message_type!r}")
    return field
