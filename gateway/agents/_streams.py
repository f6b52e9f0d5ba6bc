"""Streamed messages that always end with exactly one final frame holding the full content.

The Printer's :class:`~gateway.printer.StreamHandle` writes frames; these wrappers add the
guarantee of DESIGN §3 on every path: a message that got deltas is finalised with the content
so far when the code producing it fails or is cancelled, so a reader never waits for a final
frame that will not come. The frame is only created on first use, so an empty stream prints
nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio

from gateway.printer import Printer, StreamHandle
from gateway.store import StoreError

__all__ = ["CLOSE_TIMEOUT", "MessageStream", "TextStream"]

CLOSE_TIMEOUT = 2.0
"""Seconds the final frame of an interrupted stream may take to write before it is given up."""


class MessageStream:
    """One streamed message of any payload; the caller tells it the full content so far."""

    def __init__(self, printer: Printer, message_type: str) -> None:
        self._printer = printer
        self.message_type = message_type
        self._handle: StreamHandle | None = None
        self._full: Any = None

    @property
    def started(self) -> bool:
        """Whether a frame has been written."""
        return self._handle is not None

    @property
    def finished(self) -> bool:
        """Whether the final frame has been written."""
        return self._handle is not None and self._handle.closed

    def _open(self) -> StreamHandle:
        if self._handle is None:
            self._handle = self._printer.stream(self.message_type)
        return self._handle

    async def delta(self, payload: Any, full: Any) -> None:
        """Write a delta frame; ``full`` is what the final frame would hold after it."""
        self._full = full
        await self._open().delta(payload)

    async def final(self, payload: Any) -> None:
        """Write the final frame with the full content."""
        self._full = payload
        await self._open().final(payload)

    def current(self) -> Any:
        """The full content so far (what an early close writes)."""
        return self._full

    async def aclose(self) -> None:
        """Write the final frame with the content so far, if the message is still open."""
        if self.started and not self.finished:
            await self._open().final(self.current())

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.aclose()
            return
        # Failing or cancelled: still end the message, shielded (a cancel must not skip it) and
        # time-limited; the original exception goes on either way.
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            try:
                await self.aclose()
            except StoreError:
                pass  # the log already ended (the task was ended elsewhere)


class TextStream(MessageStream):
    """A streamed text message: deltas are pieces, the final frame is their concatenation."""

    def __init__(self, printer: Printer, message_type: str) -> None:
        super().__init__(printer, message_type)
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        """Everything written so far."""
        return "".join(self._parts)

    async def write(self, text: str) -> None:
        """Write one piece as a delta frame (empty pieces are skipped)."""
        if text:
            self._parts.append(text)
            await self._open().delta(text)

    def current(self) -> str:
        return self.text

    async def finish(self, *, force: bool = False) -> str:
        """Write the final frame (even with no deltas when ``force``); return the full text."""
        if force or self.started:
            if not self.finished:
                await self._open().final(self.text)
        return self.text
