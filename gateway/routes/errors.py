"""API errors: ``{"error": {"code", "message"}}`` with the right status, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, error_response
from gateway.protocol import parse_decimal
from gateway.store import UNREACHABLE

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "queue_full",
}


class ApiError(GatewayError):
    """An error answered to the client as JSON, with the status and code given per raise."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    """A :class:`GatewayError` that reached the app answers its own status and code; one of
    5xx is logged and answered as an internal error (no detail leaks)."""
    if not isinstance(exc, GatewayError):
        raise exc
    if exc.status_code >= 500 and not isinstance(exc, ApiError):
        return await handle_unexpected(request, exc)
    headers = exc.headers if isinstance(exc, ApiError) else None
    return error_response(exc.status_code, exc.code, str(exc), headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def handle_store_unreachable(request: Request, exc: Exception) -> Response:
    logger.warning("store unreachable on %s %s: %r", request.method, request.url.path, exc)
    return error_response(
        503,
        "store_unavailable",
        "the task store cannot be reached; retry shortly",
        {"Retry-After": "1"},
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    GatewayError: handle_gateway_error,
    HTTPException: handle_http_exception,
    **dict.fromkeys(UNREACHABLE, handle_store_unreachable),
    Exception: handle_unexpected,
}


def require_json(request: Request) -> None:
    """Refuse (415) a body not declared as JSON: ``application/json`` or ``application/*+json``.

    Besides telling a client its mistake, this keeps cross-site forms out: a page on another
    origin can send ``text/plain`` or form bodies without a CORS preflight, never JSON.
    """
    declared = request.headers.get("content-type", "")
    media_type = declared.partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        shown = f"{declared[:80]!r}" if declared else "none"
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be JSON with Content-Type: application/json (got {shown})",
        )


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over ``limit`` bytes and malformed JSON."""
    raw_length = request.headers.get("content-length")
    if raw_length is not None:
        declared = parse_decimal(raw_length)
        if declared is None:
            raise ApiError(400, "bad_request", "invalid Content-Length")
        if declared > limit:
            raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body is empty; a JSON object is expected")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON: {exc}") from exc


def validation_message(exc: ValidationError) -> str:
    """The first few validation errors as one readable line."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def read_model(request: Request, model: type[ModelT]) -> ModelT:
    """The JSON body validated as ``model``: 415 unless declared JSON, 400 for malformed JSON,
    422 for a wrong shape."""
    require_json(request)
    body = await read_json(request, request.app.state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", validation_message(exc)) from exc


def json_response(
    value: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(value), status_code, headers=headers, media_type="application/json"
    )
