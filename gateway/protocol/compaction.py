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
A reader merges a frame with ``offset`` as ``content = content[:offset] + slice`` (offset 0
starts the message over); without ``offset`` as before: a delta appends, a final replaces.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from gateway.protocol.messages import PAYLOAD_FIELDS, StoredMessage

#: The largest replayed frame (bytes of JSON) before a text final is split into pieces.
FRAME_MAX_BYTES = 64 * 1024

#: JSON escapes a character into at most 6 bytes (``\\uXXXX``), UTF-8 into at most 4.
_BYTES_PER_CHAR = 6


class Piece(StoredMessage):
    """A slice of a long final replayed in pieces: its frame has no ``id:`` line, so an SSE
    reader's cursor stays before the final until its last piece (which is a plain message)."""

    __slots__ = ()

    @property
    def frame(self) -> bytes:
        return b"data: %s\n\n" % self.data


def _heads(messages: Sequence[StoredMessage]) -> Iterator[tuple[str | None, bool]]:
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
    heads = list(_heads(messages))
    finals = {mid for mid, final in heads if final and mid is not None}
    replay: list[StoredMessage] = []
    for message, (mid, final) in zip(messages, heads, strict=True):
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
    if not isinstance(text, str):
        return [message]
    head = len(message.data) - len(orjson.dumps(text))
    step = max(1, (frame_max - head - 64) // _BYTES_PER_CHAR)
    if len(text) <= step:
        return [message]
    pieces: list[StoredMessage] = []
    for offset in range(0, len(text), step):
        last = offset + step >= len(text)
        piece = {**value, field: text[offset : offset + step], "isFinal": last, "offset": offset}
        data = orjson.dumps(piece)
        pieces.append(StoredMessage(message.seq, data, message.finish) if last else Piece(message.seq, data))
    return pieces


def merge_text(content: str, message: dict[str, Any], text: str) -> str:
    """A reader's content of a text message after ``message`` carrying ``text`` (the rule in
    the module docstring; what the page and the terminal client do)."""
    offset = message.get("offset")
    if isinstance(offset, int):
        return content[:offset] + text
    return text if message.get("isFinal", True) else content + text
