"""Streamed messages that always end with exactly one final frame holding the full content.

The Printer's :class:`~gateway.printer.StreamHandle` writes frames; these wrappers add the
guarantee of DESIGN §3 on every path: a message that got deltas is finalised with the content
so far when the code producing it fails or is cancelled, so a reader never waits for a final
frame that will not come. The frame is only created on first use, so an empty stream prints
nothing. :class:`MessageStream` streams a tool's output (any payload); :class:`LiveText` a model
turn's text, token by token, whose final frame also decides its type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

import anyio

from gateway.printer import Printer, StreamHandle
from gateway.protocol import new_message_id
from gateway.store import StoreError

__all__ = ["CLOSE_TIMEOUT", "LiveText", "MessageStream"]

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


class LiveText:
    """A model turn's text under one ``messageId``, streamed as it arrives (DESIGN §3).

    :meth:`write` is the text callback of ``ChatClient.stream_text``: it runs in the upstream
    connection's read callback and appends each piece as a non-final ``delta_type`` frame at
    once (``Printer.text_delta_now``), no task woken per token. A store that cannot append
    without waiting gets the pieces through a chain of tasks instead, in order. The final frame,
    written by :meth:`finish` or :meth:`interrupt`, carries the full text and the type the turn
    turned out to be (a thought when tool calls followed, else the answer): readers label the
    message by it.
    """

    __slots__ = (
        "_chained",
        "_delta_now",
        "_parts",
        "_printer",
        "closed",
        "delta_type",
        "message_id",
    )

    def __init__(self, printer: Printer, delta_type: str) -> None:
        self._printer = printer
        self._delta_now = printer.text_delta_now
        self.delta_type = delta_type
        self.message_id = new_message_id()
        self._parts: list[str] = []
        self._chained: asyncio.Future[None] | None = None  # the last delta that had to wait
        self.closed = False

    @property
    def text(self) -> str:
        """Everything written so far."""
        return "".join(self._parts)

    def write(self, text: str) -> None:
        """Append ``text`` as a delta frame now (or after the deltas still waiting)."""
        if not text:
            return
        self._parts.append(text)
        if self._chained is None and self._delta_now(self.message_id, text, self.delta_type):
            return
        delta = self._printer.send(
            self.delta_type, text, message_id=self.message_id, is_final=False
        )
        self._chained = asyncio.ensure_future(_after(self._chained, delta))

    async def finish(self, message_type: str, *, force: bool = False) -> str:
        """Write the final frame as ``message_type`` (with no text only when ``force``); return
        the full text."""
        if self._chained is not None:
            await self._chained
        text = self.text
        if (force or self._parts) and not self.closed:
            self.closed = True
            await self._printer.send(message_type, text, message_id=self.message_id)
        return text

    async def interrupt(self, message_type: str) -> None:
        """The turn failed or was cancelled: end a started message as ``message_type`` with the
        text so far, shielded (a cancel must not skip it) and time-limited; never raises."""
        if self._chained is not None:
            self._chained.cancel()
        if not self._parts or self.closed:
            return
        self.closed = True
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            try:
                await self._printer.send(message_type, self.text, message_id=self.message_id)
            except StoreError:
                pass  # the log already ended (the task was ended elsewhere)


async def _after(previous: asyncio.Future[None] | None, step: Awaitable[object]) -> None:
    """Await ``previous`` (its error stops the chain), then ``step``."""
    try:
        if previous is not None:
            await previous
    except BaseException:
        if asyncio.iscoroutine(step):
            step.close()  # never started
        raise
    await step
