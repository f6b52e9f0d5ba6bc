"""Compacted replay (DESIGN §3, §5): a task's history with each finished message as its final frame.

By the streaming rule the final frame of a ``messageId`` carries the full content, so a reader
catching up on history may skip the deltas of every message whose final frame it will also
receive. :func:`compact` does that to a run of durable messages: a delta whose final frame is in
the run is left out (its seq simply does not appear), every other message keeps its own seq.
Skipping is a filter on the log as it stands — the same for every cursor — so a reader resuming
after any frame it got continues exactly; a delta whose final is not durable yet is never skipped.

One replayed frame carries at most ``frame_max`` bytes. A longer text final is sent as *pieces*:
frames of the same message and seq, each carrying a slice of the full text and its ``offset``
(in characters); all but the last have ``isFinal: false`` and no SSE ``id:`` (a reader's cursor
moves only when the whole final is in), the last has ``isFinal: true`` and ``id: <seq>``.
A reader joins them
(:class:`PieceJoiner`): a piece with offset 0 starts the text over, each next one appends,
and the last completes the final frame, which then counts as any final frame does.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from gateway.protocol.messages import PAYLOAD_FIELDS, StoredMessage, encode_message
from gateway.protocol.tasks import now_ms

#: The largest replayed frame (bytes of JSON) before a text final is split into pieces.
FRAME_MAX_BYTES = 64 * 1024


class Piece(StoredMessage):
    """A slice of a long final replayed in pieces: its frame has no ``id:`` line, so an SSE
    reader's cursor stays before the final until its last piece (which is a plain message)."""

    __slots__ = ()

    @property
    def frame(self) -> bytes:
        return b"data: %s\n\n" % self.data


def heads(messages: Sequence[StoredMessage]) -> Iterator[tuple[str | None, bool]]:
    """``(messageId, isFinal)`` of each message."""
    for message in messages:
        value = orjson.loads(message.data)
        yield value.get("messageId"), bool(value.get("isFinal", True))


def compact(
    messages: Sequence[StoredMessage], frame_max: int = FRAME_MAX_BYTES
) -> list[StoredMessage]:
    """``messages`` (consecutive durable messages, in order) as a replay sends them: the
    deltas of each message whose final frame is among them left out, long text finals split
    into :class:`Piece` frames of at most ``frame_max`` bytes followed by their last piece."""
    parsed = list(heads(messages))
    finals = {mid for mid, final in parsed if final and mid is not None}
    replay: list[StoredMessage] = []
    for message, (mid, final) in zip(messages, parsed, strict=True):
        if not final and mid in finals:
            continue  # a delta of a message whose full content follows
        if final and len(message.data) > frame_max:
            replay += split_final(message, frame_max)
        else:
            replay.append(message)
    return replay


def split_final(message: StoredMessage, frame_max: int = FRAME_MAX_BYTES) -> list[StoredMessage]:
    """A final frame as pieces of at most about ``frame_max`` bytes each (see the module
    docstring); as it is where its payload is not text (a tool's map is sent as written)."""
    value: dict[str, Any] = orjson.loads(message.data)
    field = PAYLOAD_FIELDS.get(str(value.get("messageType")))
    text = value.get(field) if field else None
    if field is None or not isinstance(text, str):
        return [message]
    budget = frame_max - (len(message.data) - len(orjson.dumps(text))) - 64  # for the text
    if budget < 1:
        return [message]
    pieces: list[StoredMessage] = []
    offset = 0
    while offset < len(text):
        size = _fitting(text, offset, budget)
        last = offset + size >= len(text)
        piece: dict[str, Any] = {**value, "isFinal": last, "offset": offset}
        piece[field] = text[offset : offset + size]
        data = orjson.dumps(piece)
        pieces.append(
            StoredMessage(message.seq, data, message.finish) if last else Piece(message.seq, data)
        )
        offset += size
    if len(pieces) == 1:
        return [message]
    return pieces


def _fitting(text: str, offset: int, budget: int) -> int:
    """How many characters of ``text`` from ``offset`` encode (as JSON) in ``budget`` bytes."""
    size = budget  # a character takes at least one byte
    while size > 1 and len(orjson.dumps(text[offset : offset + size])) > budget:
        size = max(1, size * budget // len(orjson.dumps(text[offset : offset + size])) - 8)
    return size


class PieceJoiner:
    """A reader's side of the pieces: joins them back into the final frame they came from.

    :meth:`feed` takes each message a reader receives and answers it unchanged, or ``None``
    for a piece that is not the last, or for the last piece the whole final frame (its text
    joined, without ``offset``). A piece with offset 0 starts its message's text over.
    """

    def __init__(self) -> None:
        self._parts: dict[str, list[str]] = {}

    def feed(self, message: dict[str, Any]) -> dict[str, Any] | None:
        offset = message.get("offset")
        field = PAYLOAD_FIELDS.get(str(message.get("messageType")))
        if not isinstance(offset, int) or field is None:
            return message
        mid = str(message.get("messageId"))
        parts = self._parts.pop(mid, []) if offset else []
        parts.append(str(message.get(field, "")))
        if not message.get("isFinal"):
            self._parts[mid] = parts
            return None
        whole = {key: value for key, value in message.items() if key != "offset"}
        whole[field] = "".join(parts)
        return whole


def reset_message(seq: int, snapshot: dict[str, Any]) -> StoredMessage:
    """The ``reset`` message a reader whose cursor is older than the retained history gets
    instead of a gap (DESIGN §5): ``snapshot`` is the task's snapshot (``GET /api/tasks/{id}``)
    and ``seq`` the retention floor — every message up to it is gone or compacted, every one
    after it is kept — so the reader continues exactly after it (it is the SSE ``id:``; the
    frame is made when served, not stored, and means the same to every reader)."""
    body = {
        "taskId": snapshot["taskId"],
        "requestId": snapshot["requestId"],
        "messageId": f"reset-{seq}",
        "messageType": "reset",
        "messageTime": now_ms(),
        "isFinal": True,
        "finish": False,
        "snapshot": snapshot,
    }
    return encode_message(seq, body)


class CompactedLogs:
    """The compacted replays of a few finished tasks, kept so a herd of readers reconnecting to
    one (after a deploy) costs one compaction, not one each. A finished task's log changes only
    by retention, which never changes its compacted replay except by raising the floor, so an
    entry stays good while the floor it was made under holds. Least recently used go first."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._logs: dict[str, tuple[int, int, list[StoredMessage], list[int]]] = {}

    def get(self, task_id: str, floor: int, after: int) -> list[StoredMessage] | None:
        """The replay after ``after`` if it is kept (made from a cursor at or before it)."""
        entry = self._logs.pop(task_id, None)
        if entry is None or entry[0] != floor or after < entry[1]:
            return None
        self._logs[task_id] = entry  # most recently used last
        frames, seqs = entry[2], entry[3]
        return frames[bisect.bisect_right(seqs, after) :]

    def put(self, task_id: str, floor: int, after: int, frames: list[StoredMessage]) -> None:
        """Keep ``frames``, the whole replay after ``after`` of a finished task."""
        self._logs.pop(task_id, None)
        while len(self._logs) >= self.size:
            del self._logs[next(iter(self._logs))]
        self._logs[task_id] = (floor, after, frames, [m.seq for m in frames])
