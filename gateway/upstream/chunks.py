"""The body of a streamed chat completion, decoded: SSE ``data`` lines to chunks to events.

:class:`TextSink` takes the body's bytes as they arrive (a relay's hot path: one call per read,
no event objects for the text); :func:`loads_chunk`, :func:`is_done` and :func:`ended` are the
pieces :class:`~gateway.upstream.openai.ChatClient` shares between its two ways of streaming.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.upstream.chat import ChatAssembler, ChatResult
from gateway.upstream.errors import UpstreamProtocolError
from gateway.upstream.sse import SSEDecoder

__all__ = ["TextSink", "ended", "is_done", "loads_chunk"]

_WHAT = "LLM"


class TextSink:
    """Decodes a streamed body as it arrives: every event is assembled into :attr:`assembler`,
    the text deltas also go to ``on_text``. Called once per read of the body, so the usual read
    (one JSON event) takes no call it can do without."""

    __slots__ = ("_decoder", "_on_text", "assembler", "done")

    def __init__(self, on_text: Callable[[str], None]) -> None:
        self._on_text = on_text
        self._decoder = SSEDecoder()
        self.assembler = ChatAssembler()
        self.done = False  # [DONE] was read

    @property
    def emitted(self) -> bool:
        """Whether ``on_text`` was called (a retry would repeat text)."""
        return self.assembler.has_content

    def __call__(self, body: bytes) -> bool:
        """Take the next bytes of the body; True once ``[DONE]`` was read (ignore the rest)."""
        for data in self._decoder.feed_data(body):
            if len(data) < 32 and is_done(data):
                self.done = True
                return True
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = loads_chunk(data)  # raises, or decodes what invalid UTF-8 hid
            self.assembler.take(chunk, self._on_text)
        return False


def is_done(data: str | bytes) -> bool:
    """Whether an event's data is the ``[DONE]`` that ends an OpenAI stream."""
    return len(data) < 32 and data.strip() in ("[DONE]", b"[DONE]")


def ended(assembler: ChatAssembler) -> ChatResult:
    """The result of a body that ended without ``[DONE]``: whole if a choice finished."""
    if assembler.finish_reason is None:
        raise UpstreamProtocolError(f"{_WHAT}: the stream ended before [DONE]")
    return assembler.result()


def loads_chunk(data: str | bytes) -> Any:
    """One event's JSON; invalid UTF-8 is replaced, as in decoded SSE text; not JSON raises
    :class:`UpstreamProtocolError`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if isinstance(data, bytes):
            return loads_chunk(data.decode("utf-8", "replace"))
        raise UpstreamProtocolError(f"{_WHAT}: a chunk is not JSON: {data[:120]!r}") from exc
