"""The LLM stub: an offline, deterministic, OpenAI-compatible chat-completions server.

Routes: ``POST /v1/chat/completions`` (streamed and not), ``GET /v1/models``, ``GET /health``,
and for tests ``POST /_stub/faults`` ``{"fault", "times"}``, ``DELETE /_stub/faults`` and
``GET /_stub/stats``. Run it with ``agent-gateway serve llm_stub``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llm_stub._text import message_text
from llm_stub.completions import build_completion
from llm_stub.faults import FaultBoard, parse_directives, resolve_knobs
from llm_stub.scripts import respond
from llm_stub.settings import Knobs, StubSettings, parse_fault
from llm_stub.streaming import DONE_FRAME, PacedResponse, sse_frame

__all__ = ["create_app"]


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    """An OpenAI-style error body."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


async def _read_json(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None


def _validate(body: Any) -> str | None:
    """Why the request body is invalid, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "every message must be an object with a 'role'"
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        return "'tools' must be a list of objects"
    return None


class _Handlers:
    """The endpoints, sharing one app's settings and fault board."""

    def __init__(self, settings: StubSettings) -> None:
        self.settings = settings
        self.board = FaultBoard()

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions``: knobs, faults, then the scripted reply, paced."""
        body = await _read_json(request)
        problem = _validate(body)
        if problem is not None:
            return _error(400, problem, "invalid_request_error")
        messages: list[dict[str, Any]] = body["messages"]
        user_texts = [message_text(m) for m in messages if m.get("role") == "user"]
        try:
            knobs = resolve_knobs(
                self.settings.knobs, self.board, request.headers, parse_directives(user_texts)
            )
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error", "invalid_stub_knob")
        stream = bool(body.get("stream"))
        self.board.record(streamed=stream, fault=knobs.fault)
        if knobs.fault == "500":
            return _error(500, "injected fault: internal error", "server_error", "stub_fault")
        if knobs.fault == "429":
            response = _error(429, "injected fault: rate limited", "rate_limit_error", "stub_fault")
            response.headers["retry-after"] = str(self.settings.retry_after_seconds)
            return response
        reply = respond(messages, body.get("tools"), body.get("tool_choice"))
        completion = build_completion(
            reply, messages, str(body.get("model") or self.settings.model)
        )
        if stream:
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
            frames = [
                (sse_frame(chunk), weight)
                for chunk, weight in completion.chunks(knobs.chunk_size, include_usage)
            ]
            frames.append((DONE_FRAME, 0))
            headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
            return self._paced(frames, knobs, "text/event-stream", headers)
        payload = orjson.dumps(completion.message())
        half = len(payload) // 2
        frames = [(payload[:half], 0), (payload[half:], completion.completion_tokens)]
        return self._paced(frames, knobs, "application/json", {"content-length": str(len(payload))})

    def _paced(
        self, frames: list[tuple[bytes, int]], knobs: Knobs, media: str, headers: dict[str, str]
    ) -> PacedResponse:
        return PacedResponse(
            frames,
            knobs=knobs,
            media_type=media,
            headers=headers,
            stall_seconds=self.settings.stall_seconds,
        )

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the one model the stub pretends to be."""
        model = {"id": self.settings.model, "object": "model", "created": 0, "owned_by": "llm_stub"}
        return JSONResponse({"object": "list", "data": [model]})

    async def health(self, request: Request) -> Response:
        """``GET /health``."""
        return JSONResponse({"status": "ok"})

    async def arm_fault(self, request: Request) -> Response:
        """``POST /_stub/faults`` ``{"fault": "500", "times": 1}``: fail the next N requests."""
        body = await _read_json(request)
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object", "invalid_request_error")
        times = body.get("times", 1)
        try:
            fault = parse_fault(str(body.get("fault") or ""))
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error")
        if not isinstance(times, int) or isinstance(times, bool) or times < 0:
            return _error(400, "'times' must be a non-negative integer", "invalid_request_error")
        self.board.arm(fault, times)
        return JSONResponse(self.board.stats())

    async def disarm_fault(self, request: Request) -> Response:
        """``DELETE /_stub/faults``: back to normal at once."""
        self.board.arm(None, 0)
        return JSONResponse(self.board.stats())

    async def stats(self, request: Request) -> Response:
        """``GET /_stub/stats``: requests served, streamed, per-fault counts, armed fault."""
        return JSONResponse(self.board.stats())


def create_app(settings: StubSettings | None = None) -> Starlette:
    """The stub's ASGI app; settings are read from the environment unless given."""
    handlers = _Handlers(settings or StubSettings.from_env())
    routes = [
        Route("/v1/chat/completions", handlers.chat_completions, methods=["POST"]),
        Route("/v1/models", handlers.models, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/_stub/faults", handlers.arm_fault, methods=["POST"]),
        Route("/_stub/faults", handlers.disarm_fault, methods=["DELETE"]),
        Route("/_stub/stats", handlers.stats, methods=["GET"]),
    ]
    return Starlette(routes=routes)
