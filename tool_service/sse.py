"""JoyAgent-style SSE for the tools: framing, stream modes, heartbeats and the tool response.

Wire format (genie-tool): ``data: <json>\\n\\n`` per frame, ``data: heartbeat\\n\\n`` every
``heartbeat_interval`` seconds (data or not), and ``data: [DONE]\\n\\n`` at the end. A tool that
fails sends an error frame ``{"requestId", "error": {"code", "message"}, "isFinal": true}`` before
``[DONE]``; the stream never just closes. With ``stream: false`` the same frames are produced but
only the last one is answered, as plain JSON (or ``{"error": ...}`` with the error's HTTP status).

The stream is sse-starlette's ``EventSourceResponse``, as in genie-tool itself: the heartbeat is
its ping (every ``heartbeat_interval`` seconds), ``sep="\\n"`` keeps the framing above, a send
that takes longer than ``SEND_TIMEOUT`` drops the client, and a client that goes away cancels
the tool. Importing sse-starlette replaces uvicorn's ``Server.handle_exit`` (its way of seeing
a shutdown): on SIGTERM an open stream gets ``SHUTDOWN_GRACE`` seconds to end on its own, as
uvicorn's graceful shutdown gave it before, and is then cut.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import aclosing
from typing import Any, Literal

import anyio
import orjson
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import ToolServiceError

__all__ = ["Frame", "StreamMode", "ToolResponse", "batch_text", "encode_frame"]

logger = logging.getLogger(__name__)

Frame = dict[str, Any]
DONE = b"data: [DONE]\n\n"
SEND_TIMEOUT = 30.0
SHUTDOWN_GRACE = 9.0  # below the 10 s uvicorn gives a graceful shutdown (gateway.cli)
SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


class StreamMode(BaseModel):
    """``streamMode``: ``general`` (every chunk), ``token`` (N chunks), ``time`` (every N s)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    mode: Literal["general", "token", "time"] = "general"
    token: int = Field(default=5, ge=1, le=10_000)
    time: float = Field(default=5.0, gt=0, le=3600)


async def batch_text(chunks: AsyncIterable[str], mode: StreamMode) -> AsyncGenerator[str, None]:
    """Group text deltas as ``mode`` says; the leftover is always flushed at the end.

    ``time`` follows genie-tool: a batch is sent when a chunk arrives and at least ``mode.time``
    seconds have passed since the previous batch (no timer fires between chunks).
    """
    pending: list[str] = []
    last_sent = time.monotonic()
    async for chunk in chunks:
        if not chunk:
            continue
        pending.append(chunk)
        if mode.mode == "general":
            due = True
        elif mode.mode == "token":
            due = len(pending) >= mode.token
        else:
            due = time.monotonic() - last_sent >= mode.time
        if due:
            yield "".join(pending)
            pending.clear()
            last_sent = time.monotonic()
    if pending:
        yield "".join(pending)


def encode_frame(frame: Frame) -> bytes:
    """One SSE event: ``data: <json>`` and a blank line."""
    return b"data: " + orjson.dumps(frame) + b"\n\n"


def error_frame(request_id: str, error: ToolServiceError) -> Frame:
    """The frame that ends a failed stream, before ``[DONE]``."""
    return {"requestId": request_id, "error": error.to_dict(), "isFinal": True}


class ToolResponse(Response):
    """Run a tool's frame generator and answer it as SSE (``stream``) or as its last frame in JSON.

    The generator is driven inside this response, so when the client goes away the task group is
    cancelled and the generator is closed in the task that iterated it: its ``finally`` blocks
    (which kill sandboxed processes) run at once, not at garbage collection.
    """

    def __init__(
        self,
        frames: AsyncGenerator[Frame, None],
        *,
        request_id: str,
        stream: bool,
        heartbeat_interval: float,
    ) -> None:
        super().__init__(status_code=200)
        self.frames = frames
        self.request_id = request_id
        self.stream = stream
        self.heartbeat_interval = heartbeat_interval
        self.error: ToolServiceError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stream:
            await self._send_stream(scope, receive, send)
            return
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            try:
                await self._send_json(send)
            finally:
                group.cancel_scope.cancel()

    async def _outcome(self) -> AsyncGenerator[Frame, None]:
        """The tool's frames, and one error frame if it fails (the error kept in ``error``)."""
        try:
            async with aclosing(self.frames) as frames:
                async for frame in frames:
                    yield frame
        except ToolServiceError as exc:
            logger.info("tool request %s failed: %s", self.request_id, exc.message)
            self.error = exc
        except Exception:
            logger.exception("tool request %s crashed", self.request_id)
            self.error = ToolServiceError("internal error")
        if self.error is not None:
            yield error_frame(self.request_id, self.error)

    async def _events(self) -> AsyncGenerator[bytes, None]:
        """The SSE body: every frame as ``data: <json>``, then ``[DONE]``."""
        async with aclosing(self._outcome()) as outcome:
            async for frame in outcome:
                yield encode_frame(frame)
        yield DONE

    async def _send_json(self, send: Send) -> None:
        last: Frame | None = None
        async with aclosing(self._outcome()) as outcome:
            async for frame in outcome:
                last = frame
        status = 200
        if self.error is not None:
            status = self.error.status_code
            last = {"error": self.error.to_dict()}
        elif last is None:
            last = {"requestId": self.request_id, "isFinal": True}
        body = orjson.dumps(last)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = EventSourceResponse(
            self._events(),
            headers=SSE_HEADERS,
            ping=self.heartbeat_interval,
            ping_message_factory=lambda: ServerSentEvent(data="heartbeat", sep="\n"),
            sep="\n",
            send_timeout=SEND_TIMEOUT,
            shutdown_grace_period=SHUTDOWN_GRACE,
        )
        try:
            await response(scope, receive, send)
        except SendTimeoutError:
            # A client that cannot take data within the limit is treated as gone.
            logger.warning("dropped slow client of request %s", self.request_id)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client disconnects (the caller going away stops the tool)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
