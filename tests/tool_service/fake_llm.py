"""A scripted OpenAI-compatible ``/v1/chat/completions`` server for the tool-service tests.

A test sets ``fake.reply`` (the chunks to stream, an optional pause before and between them, or
an HTTP error) and afterwards reads ``fake.requests`` (every request body received).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    """What the fake answers next."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake."])
    delay: float = 0.0
    first_delay: float = 0.0
    status: int = 200
    garbage_after: int | None = None  # send a chunk that is not JSON after this many chunks


class FakeLLM:
    """The fake's state, shared between the test thread and the server thread."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.url = ""  # the ``/v1`` base URL, set once the fake is served
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        """The Starlette app to serve with ``serve_app``."""
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    def last_prompt(self) -> str:
        """The text of every message of the last request, joined."""
        with self._lock:
            messages = self.requests[-1]["messages"]
        return "\n".join(message["content"] for message in messages)

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            reply = self.reply
        if reply.status != 200:
            return JSONResponse(
                {"error": {"message": "scripted failure"}}, status_code=reply.status
            )

        async def events() -> Any:
            await anyio.sleep(reply.first_delay)
            for index, text in enumerate(reply.chunks):
                if index == reply.garbage_after:
                    yield "data: {this is not json\n\n"
                    return
                if index and reply.delay:
                    await anyio.sleep(reply.delay)
                chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
                # Alternate "data:" with and without the space, as real servers differ.
                prefix = "data: " if index % 2 == 0 else "data:"
                yield prefix + json.dumps(chunk) + "\r\n\r\n"
            yield ": keep-alive comment\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
