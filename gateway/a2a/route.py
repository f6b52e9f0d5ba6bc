"""The JSON-RPC endpoint: the SDK's dispatcher, with our SSE for the two streaming methods.

Every method but ``SendStreamingMessage`` and ``SubscribeToTask`` goes to the SDK's
``JsonRpcDispatcher`` unchanged (parsing, ``A2A-Version`` check, error codes). The streaming
two are parsed and checked with the same SDK functions, but answered here, because the SDK's
SSE carries no event ids and a stream of ours must: each frame's ``id:`` is the seq of the log
message it came from (DESIGN §5), and a ``SubscribeToTask`` with ``Last-Event-ID: N`` starts
with the ``Task`` as of seq N and continues with exactly the events after it, on any replica.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.server.routes import DefaultServerCallContextBuilder, create_jsonrpc_routes
from a2a.types import SendMessageRequest, SubscribeToTaskRequest, TaskState
from a2a.utils import constants, proto_utils
from a2a.utils.errors import A2AError, InvalidParamsError, InvalidRequestError
from a2a.utils.version_validator import validate_version
from google.protobuf.json_format import MessageToDict, ParseDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.a2a.handler import REQUEST, GatewayRequestHandler
from gateway.protocol import parse_decimal

STREAMING: dict[str, type[Any]] = {
    "SendStreamingMessage": SendMessageRequest,
    "SubscribeToTask": SubscribeToTaskRequest,
}
SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    "Content-Type": "text/event-stream; charset=utf-8",
}

Stream = AsyncGenerator[tuple[int | None, Event | None]]


class ContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, plus the Starlette request (for the key name and the app)."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[REQUEST] = request
        return context


class JsonRpcEndpoint:
    """``POST`` handler of the A2A JSON-RPC path."""

    def __init__(self, handler: GatewayRequestHandler) -> None:
        self.handler = handler
        self.builder = ContextBuilder()
        (route,) = create_jsonrpc_routes(handler, "/", context_builder=self.builder)
        self.dispatch = route.endpoint  # the SDK's dispatcher, as its own route would call it

    async def handle(self, request: Request) -> Response:
        """Answer one JSON-RPC request (a JSON body, or an SSE stream for the streaming two)."""
        try:
            body = await request.json()  # cached on the request: the dispatcher reuses it
        except ValueError:
            body = None
        if (
            isinstance(body, dict)
            and body.get("jsonrpc") == "2.0"
            and isinstance(body.get("method"), str)
            and body["method"] in STREAMING
        ):
            return await self._stream(request, body)
        refusal = _unknown_enum(body)
        if refusal is not None:
            return JSONResponse(build_error_response(body.get("id"), refusal))
        return await self.dispatch(request)  # type: ignore[no-any-return]

    async def _stream(self, request: Request, body: dict[str, Any]) -> Response:
        request_id = body.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
            error = InvalidRequestError(message="id must be a string, integer, or null")
            return JSONResponse(build_error_response(None, error))
        method: str = body["method"]
        context = self.builder.build(request)
        context.state["method"] = method
        context.state["request_id"] = request_id
        try:
            try:
                params = ParseDict(
                    body.get("params", {}), STREAMING[method](), ignore_unknown_fields=True
                )
            except Exception as exc:
                raise InvalidParamsError(data={"parseError": str(exc)}) from exc
            proto_utils.validate_proto_required_fields(params)
            stream = await self._open(params, context=context, request=request)
            first = await anext(stream)
        except A2AError as exc:
            return JSONResponse(build_error_response(request_id, exc))
        retry = request.app.state.stream_settings.sse_retry_ms
        return StreamingResponse(_frames(request_id, first, stream, retry), headers=SSE_HEADERS)

    @validate_version(constants.PROTOCOL_VERSION_1_0)
    async def _open(self, params: Any, *, context: ServerCallContext, request: Request) -> Stream:
        if isinstance(params, SendMessageRequest):
            return await self.handler.start_stream(params, context)
        raw = request.headers.get("last-event-id")
        after = None
        if raw is not None:
            after = parse_decimal(raw.strip())
            if after is None:
                raise InvalidParamsError(message="Last-Event-ID must be a seq this stream sent")
        return await self.handler.open_subscription(params, context, after)


def _unknown_enum(body: Any) -> A2AError | None:
    """``ListTasks`` with a ``status`` that is no task state: refused, not ignored.

    The SDK parses params leniently (unknown fields are skipped for forward compatibility),
    which also turns an unknown enum value into "unspecified" — a filter silently dropped, so
    a typo would list every task.
    """
    if not isinstance(body, dict) or body.get("method") != "ListTasks":
        return None
    params = body.get("params")
    status = params.get("status") if isinstance(params, dict) else None
    if status is None or status in TaskState.keys() or status in TaskState.values():
        return None
    return InvalidParamsError(message=f"status {status!r} is not a task state")


async def _frames(
    request_id: str | int | None,
    first: tuple[int | None, Event | None],
    stream: Stream,
    retry_ms: int,
) -> AsyncIterator[bytes]:
    """SSE frames: ``retry`` once, ``id: <seq>`` on the last event of each log message."""
    yield f"retry: {retry_ms}\n\n".encode()
    try:
        item: tuple[int | None, Event | None] | None = first
        while item is not None:
            seq, event = item
            if event is None:
                yield b": ping\n\n"
            else:
                result = MessageToDict(proto_utils.to_stream_response(event))
                data = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
                head = f"id: {seq}\n".encode() if seq is not None else b""
                yield head + b"data: " + data + b"\n\n"
            item = await anext(stream, None)
    except A2AError as exc:
        yield (
            b"event: error\ndata: " + orjson.dumps(build_error_response(request_id, exc)) + b"\n\n"
        )
    finally:
        await stream.aclose()


__all__ = ["JsonRpcEndpoint"]
