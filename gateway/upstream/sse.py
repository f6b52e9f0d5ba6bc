"""A streaming Server-Sent Events decoder that follows the WHATWG parsing rules exactly.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

The decoder is incremental: bytes may be fed split at any boundary, inside a multi-byte UTF-8
character or between the CR and the LF of a CRLF. Lines end at CR, LF or CRLF; one leading BOM
is stripped; comment lines are ignored (or reported to ``on_comment``); ``data`` lines are joined
with ``\\n``; an ``id`` containing NUL is ignored; ``retry`` must be ASCII digits; a blank line
dispatches the event unless its data buffer is empty. ``[DONE]`` is an ordinary event here.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import httpx

from gateway.upstream.errors import UpstreamProtocolError

__all__ = ["SSEDecoder", "ServerSentEvent", "aiter_sse"]

_BOM = "\ufeff"
_LINE_END = re.compile("[\r\n]")
_MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    ``id`` is the last event ID in force when it was dispatched (it persists across events, as
    in a browser); ``retry`` is the reconnection time set in this event's own block, if any.
    """

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into :class:`ServerSentEvent` objects; feed it with :meth:`feed`."""

    def __init__(
        self, on_comment: Callable[[str], None] | None = None, max_line: int = _MAX_LINE
    ) -> None:
        self._on_comment = on_comment
        self._max_line = max_line
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # text after the last line end
        self._started = False  # a first character was decoded (the BOM check is done)
        self._skip_lf = False  # the last input ended with CR: an LF first in the next is its pair
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._block_retry: int | None = None
        self._clean = False  # between blocks, nothing held back: ``feed_data`` may go fast
        self.retry: int | None = None
        """The latest reconnection time (ms) the stream asked for, or None."""

    @property
    def last_event_id(self) -> str:
        """The last event ID buffer: what a reconnect would send as ``Last-Event-ID``."""
        return self._last_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk`` and return the events it completes (possibly none)."""
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        events: list[ServerSentEvent] = []
        if not self._pending and "\r" not in text:
            text = self._feed_blocks(text, events)
        buffer = self._pending + text
        pos = 0
        while (match := _LINE_END.search(buffer, pos)) is not None:
            end = match.end()
            if match.group() == "\r":
                if end == len(buffer):
                    self._skip_lf = True
                elif buffer[end] == "\n":
                    end += 1
            event = self._process_line(buffer[pos : match.start()])
            if event is not None:
                events.append(event)
            pos = end
        self._pending = buffer[pos:]
        if len(self._pending) > self._max_line:
            raise UpstreamProtocolError(f"SSE line longer than {self._max_line} characters")
        self._clean = not (
            self._pending
            or self._data
            or self._event
            or self._block_retry is not None
            or self._skip_lf
            or self._utf8.getstate()[0]
        )
        return events

    def feed_data(self, chunk: bytes) -> list[str | bytes]:
        """The data of the events ``chunk`` completes, as ``feed`` gives them, without the
        event objects. A chunk of whole one-line ``data: `` blocks (an LLM's usual chunk) is
        split as bytes, not decoded: its data come as UTF-8 bytes, the rest as text."""
        if self._clean and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            if chunk.startswith(b"data: ") and chunk.find(b"\n") == len(chunk) - 2:
                return [chunk[6:-2]]  # one one-line event: the usual chunk, split no further
            found: list[str | bytes] = []
            for block in chunk[:-2].split(b"\n\n"):
                if not block.startswith(b"data: ") or b"\n" in block:
                    break
                found.append(block[6:])
            else:
                return found
        return [event.data for event in self.feed(chunk)]

    def _feed_blocks(self, text: str, events: list[ServerSentEvent]) -> str:
        """The common case, fast: whole LF-ended blocks, most of them one ``data: `` line (an
        LLM's chunks). Appends their events; returns the text after the last blank line."""
        *blocks, rest = text.split("\n\n")
        for block in blocks:
            if (
                block.startswith("data: ")
                and "\n" not in block
                and not self._data
                and not self._event
                and self._block_retry is None
            ):
                events.append(ServerSentEvent(block[6:], "message", self._last_id))
                continue
            for line in block.split("\n"):
                event = self._process_line(line)
                if event is not None:
                    events.append(event)
            event = self._dispatch()  # the blank line that ended the block
            if event is not None:
                events.append(event)
        return rest

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            if self._on_comment is not None:
                self._on_comment(line[1:])
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = self._block_retry = int(value)
        # any other field name is ignored, as the specification says
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, retry = self._data, self._event, self._block_retry
        self._data, self._event, self._block_retry = [], "", None
        if not data:
            return None
        return ServerSentEvent(
            data="\n".join(data), event=event or "message", id=self._last_id, retry=retry
        )


async def aiter_sse(
    response: httpx.Response, *, on_comment: Callable[[str], None] | None = None
) -> AsyncGenerator[ServerSentEvent, None]:
    """Yield the events of a streamed ``httpx`` response (opened with ``stream=True``).

    An event left incomplete when the body ends is discarded, as the specification says. The
    caller owns the response and closes it; httpx errors propagate unconverted.
    """
    decoder = SSEDecoder(on_comment=on_comment)
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            yield event
