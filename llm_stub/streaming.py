"""A paced ASGI response: frames sent at a token rate, with ``cut`` and ``stall`` faults.

``cut`` sends a few frames and then returns without finishing the response: uvicorn closes the
socket, so the client sees a truncated body (deliberate, and uvicorn logs one error line).
``stall`` sends the same frames and then goes silent, keeping the connection open for
``stall_seconds`` (or until the client leaves), and then cuts.

Why not sse-starlette's ``EventSourceResponse`` (which tool_service uses): it always ends a
stream whose generator returns with the closing chunk, so ``cut`` would arrive as a complete
response; the only way to truncate is to raise from the generator, which uvicorn logs as
"Exception in ASGI application" with a full traceback for every injected fault. And the same
paced, faultable body is also the non-streamed ``application/json`` answer, which is no SSE.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llm_stub.settings import Fault, Knobs

__all__ = ["PacedResponse", "fault_point", "sse_frame"]

DONE_FRAME = b"data: [DONE]\n\n"


def sse_frame(obj: object) -> bytes:
    """``data: <json>`` and a blank line."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def fault_point(frame_count: int) -> int:
    """How many frames a ``cut`` or ``stall`` lets through: a few, never the last one."""
    return max(1, min(5, (frame_count - 1) // 2))


class PacedResponse(Response):
    """Sends ``frames`` (bytes, weight in tokens) paced by ``knobs``, then maybe a fault."""

    def __init__(
        self,
        frames: Sequence[tuple[bytes, int]],
        *,
        knobs: Knobs,
        media_type: str,
        headers: Mapping[str, str] | None = None,
        stall_seconds: float = 300.0,
    ) -> None:
        self.frames = list(frames)
        self.knobs = knobs
        self.stall_seconds = stall_seconds
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        finished = False
        async with anyio.create_task_group() as group:

            async def stop_on_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(stop_on_disconnect)
            finished = await self._send_frames(send, self.knobs.fault)
            group.cancel_scope.cancel()
        if finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # else: returning without the final message makes the server abort the connection

    async def _send_frames(self, send: Send, fault: Fault | None) -> bool:
        """Send the frames on schedule; False when a fault cut the response short."""
        limit = fault_point(len(self.frames)) if fault in ("cut", "stall") else len(self.frames)
        tps = self.knobs.tokens_per_second
        due = time.monotonic() + self.knobs.ttft_ms / 1000
        for body, weight in self.frames[:limit]:
            if tps > 0:
                due += weight / tps
            delay = due - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if fault == "stall":
            await anyio.sleep(self.stall_seconds)
        return limit == len(self.frames)
