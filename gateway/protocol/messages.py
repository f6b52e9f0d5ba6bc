"""Messages of a task's log: the types of DESIGN §3 and their one-time encoding.

A message is encoded to JSON exactly once, when it is appended; the same bytes are stored,
replayed, polled and framed for every SSE reader.
"""

from __future__ import annotations

from typing import Any

import orjson

#: messageType → the payload field it carries.
PAYLOAD_FIELDS: dict[str, str] = {
    "status": "status",
    "plan_thought": "planThought",
    "plan": "plan",
    "task": "task",
    "tool_thought": "toolThought",
    "tool_result": "toolResult",
    "agent_stream": "result",
    "code": "resultMap",
    "markdown": "resultMap",
    "html": "resultMap",
    "deep_search": "resultMap",
    "file": "resultMap",
    "task_summary": "taskSummary",
    "result": "result",
    "error": "error",
    "reset": "snapshot",
}

MESSAGE_TYPES = frozenset(PAYLOAD_FIELDS)


class StoredMessage:
    """One appended message: its ``seq``, its JSON bytes and its SSE frame (built once)."""

    __slots__ = ("_frame", "data", "finish", "seq")

    def __init__(self, seq: int, data: bytes, finish: bool = False) -> None:
        self.seq = seq
        self.data = data
        self.finish = finish
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """``id: <seq>\\ndata: <json>\\n\\n``, cached so fan-out never re-encodes."""
        frame = self._frame
        if frame is None:
            frame = self._frame = b"id: %d\ndata: %s\n\n" % (self.seq, self.data)
        return frame

    def json(self) -> dict[str, Any]:
        """The decoded message (tests and slow paths only)."""
        value: dict[str, Any] = orjson.loads(self.data)
        return value

    def __repr__(self) -> str:
        return f"StoredMessage(seq={self.seq}, finish={self.finish}, {len(self.data)} bytes)"


def encode_body(body: dict[str, Any]) -> bytes:
    """Encode a message body without its ``seq`` (which the log assigns on append)."""
    return orjson.dumps(body)


def appended_message(seq: int, body: dict[str, Any] | bytes) -> StoredMessage:
    """The non-final message ``seq`` of the log: ``body`` encoded with ``"finish": false``, or
    as given where it is that JSON already (a relay's delta), stamped with ``seq``. One call
    per append (a relay makes one per token)."""
    if type(body) is not bytes:
        body["finish"] = False  # type: ignore[index]
        body = orjson.dumps(body)
    return StoredMessage(seq, b'{"seq":%d,%s' % (seq, body[1:]))


def stamp_seq(seq: int, encoded: bytes) -> bytes:
    """Splice ``"seq": N`` in as the first key of an encoded body; no re-encoding."""
    return b'{"seq":%d,%s' % (seq, encoded[1:])


def encode_message(seq: int, body: dict[str, Any]) -> StoredMessage:
    """Encode ``body`` once and stamp it with ``seq``."""
    return StoredMessage(seq, stamp_seq(seq, orjson.dumps(body)), bool(body.get("finish")))
