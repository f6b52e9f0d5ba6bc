"""Small fake upstreams for the client tests: scripted SSE responses served by real uvicorn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Ending = Literal["complete", "cut", "stall"]


class ScriptedStream(Response):
    """Sends ``frames`` as they are, then completes, cuts the connection, or stalls.

    A stall lasts until the client disconnects (bounded at 30 s), so the server can shut down.
    """

    def __init__(
        self,
        frames: Sequence[bytes],
        ending: Ending = "complete",
        media_type: str = "text/event-stream",
        status_code: int = 200,
    ) -> None:
        self.frames = list(frames)
        self.ending = ending
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        for frame in self.frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        if self.ending == "complete":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif self.ending == "stall":
            with anyio.move_on_after(30):
                while (await receive())["type"] != "http.disconnect":
                    pass
        # "cut" (and a stall that ends): return without completing, so uvicorn drops the socket
