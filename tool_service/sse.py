"""JoyAgent-style SSE for the tools: framing, stream modes, heartbeats and the tool response.

Wire format (genie-tool): ``data: <json>\\n\\n`` per frame, ``data: heartbeat\\n\\n`` after every
``heartbeat_interval`` seconds of silence, and ``data: [DONE]\\n\\n`` at the end. A tool that fails
sends an error frame ``{"requestId", "error": {"code", "message"}, "isFinal": true}`` before
``[DONE]``; the stream never just closes. With ``stream: false`` the same frames are produced but
only the last one is answered, as plain JSON (or ``{"error": ...}`` with the error's HTTP status).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Literal

import anyio
import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import ToolServiceError

__all__ = ["Frame", "StreamMode", "ToolResponse", "batch_text", "encode_frame"]

logger = logging.getLogger(__name__)

Frame = dict[str, Any]
HEARTBEAT = b"data: heartbeat\n\n"
DONE = b"data: [DONE]\n\n"
SEND_TIMEOUT = 30.0
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            try:
                if self.stream:
                    await self._send_stream(send, group.cancel_scope)
                else:
                    await self._send_json(send)
            finally:
                group.cancel_scope.cancel()

    async def _run(self, emit: Callable[[Frame], Awaitable[None]]) -> ToolServiceError | None:
        """Feed every frame to ``emit``; turn a failure into one error frame and return it."""
        try:
            async with aclosing(self.frames) as frames:
                async for frame in frames:
                    await emit(frame)
        except ToolServiceError as exc:
            logger.info("tool request %s failed: %s", self.request_id, exc.message)
            await emit(error_frame(self.request_id, exc))
            return exc
        except Exception:
            logger.exception("tool request %s crashed", self.request_id)
            error = ToolServiceError("internal error")
            await emit(error_frame(self.request_id, error))
            return error
        return None

    async def _send_json(self, send: Send) -> None:
        last: list[Frame] = []

        async def keep(frame: Frame) -> None:
            last[:] = [frame]

        error = await self._run(keep)
        status = 200
        if error is not None:
            status = error.status_code
            frame: Frame = {"error": error.to_dict()}
        else:
            frame = last[0] if last else {"requestId": self.request_id, "isFinal": True}
        body = orjson.dumps(frame)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_stream(self, send: Send, connection: anyio.CancelScope) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        headers += [(k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        lock = anyio.Lock()
        last_write = time.monotonic()

        async def write(chunk: bytes) -> None:
            nonlocal last_write
            async with lock:
                with anyio.move_on_after(SEND_TIMEOUT) as slow:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if slow.cancelled_caught:
                    # A client that cannot take data within the limit is treated as gone.
                    logger.warning("dropping slow client of request %s", self.request_id)
                    connection.cancel()
                last_write = time.monotonic()

        async def heartbeat() -> None:
            while True:
                await anyio.sleep(max(0.0, last_write + self.heartbeat_interval - time.monotonic()))
                if time.monotonic() - last_write >= self.heartbeat_interval:
                    await write(HEARTBEAT)

        async def emit(frame: Frame) -> None:
            await write(encode_frame(frame))

        async with anyio.create_task_group() as group:
            group.start_soon(heartbeat)
            await self._run(emit)
            group.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": DONE, "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client disconnects (the caller going away stops the tool)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
