"""HTTP endpoints of the bridge, in JoyAgent's wire format.

Every ``/v1/*`` answer is ``{code, message, data}`` with ``code`` equal to the HTTP status.
Errors keep that shape (``data: null``) and add the gateway-wide
``"error": {"code", "message"}`` object, with a matching 4xx/5xx status (JoyAgent itself
answers errors as HTTP 200 with ``code: 500``; we deliberately use the real status too).

Request headers, as in JoyAgent's genie-client:

* ``Cookie`` is forwarded to the MCP server;
* ``X-Server-Keys`` names more headers for the server: a JSON object of ``{name: value}``, or
  (JoyAgent style) a comma-separated list of names whose values are copied from this request;
* ``Timeout`` (seconds) replaces ``MCP_CALL_TIMEOUT`` for this call, capped at
  ``MCP_MAX_CALL_TIMEOUT``.

The body may also carry ``transport`` (``auto``/``sse``/``streamable_http``) to force one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from mcp_client.addresses import checked_address
from mcp_client.errors import InvalidRequest, McpClientError, ServerNotAllowed
from mcp_client.pool import SessionPool
from mcp_client.settings import Settings
from mcp_client.target import (
    ServerTarget,
    Transport,
    check_url,
    header_items,
    is_allowed,
    resolve_transport,
)

__all__ = ["health", "pool_stats", "serv_pong", "tool_call", "tool_list"]

logger = logging.getLogger(__name__)

# Headers the bridge manages itself; a caller may not smuggle them to the server.
_RESERVED_HEADERS = frozenset(
    {
        "accept",
        "connection",
        "content-length",
        "content-type",
        "host",
        "last-event-id",
        "mcp-protocol-version",
        "mcp-session-id",
        "transfer-encoding",
        "upgrade",
    }
)


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Call:
    """A parsed bridge request: where to go, how long to wait, and the rest of the body."""

    target: ServerTarget
    timeout: float
    body: dict[str, Any]


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _success(data: Any) -> Response:
    return _json(200, {"code": 200, "message": "success", "data": data})


def _failure(exc: McpClientError) -> Response:
    error = {"code": exc.code, "message": exc.message}
    body = {"code": exc.status_code, "message": exc.message, "data": None, "error": error}
    return _json(exc.status_code, body)


def _endpoint(
    handler: Callable[[Request, _Call], Awaitable[Any]],
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: parse the request, run it, turn errors into the JSON error shape."""

    async def endpoint(request: Request) -> Response:
        try:
            call = await _parse(request)
            return _success(await handler(request, call))
        except McpClientError as exc:
            logger.info("%s %s failed: %s %s", request.method, request.url.path, exc.code, exc)
            return _failure(exc)
        except Exception:
            logger.exception("%s %s failed unexpectedly", request.method, request.url.path)
            return _failure(McpClientError("internal error"))

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def _parse(request: Request) -> _Call:
    settings: Settings = request.app.state.settings
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    url = check_url(body.get("server_url"))
    if not is_allowed(url, settings.allowed_servers):
        raise ServerNotAllowed(f"server_url {url} is not in MCP_ALLOWED_SERVERS")
    requested = body.get("transport") or "auto"
    if not isinstance(requested, str):
        raise InvalidRequest("transport must be a string")
    transport = resolve_transport(url, Transport.parse(requested), settings.transport_rules)
    headers = header_items(_forwarded_headers(request))
    timeout = _timeout(request, settings)
    if settings.allowed_servers is None:  # listed servers are trusted, others must be global
        parts = urlsplit(url)
        await checked_address(parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme])
    return _Call(ServerTarget(url, transport, headers), timeout, body)


def _forwarded_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    cookie = request.headers.get("cookie")
    if cookie:
        headers["cookie"] = cookie
    raw = request.headers.get("x-server-keys", "").strip()
    if raw.startswith("{"):
        try:
            extra = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("X-Server-Keys is not valid JSON") from None
        if not isinstance(extra, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in extra.items()
        ):
            raise InvalidRequest("X-Server-Keys must be a JSON object of string headers")
        headers.update({key.lower(): value for key, value in extra.items()})
    elif raw:
        for name in (part.strip().lower() for part in raw.split(",")):
            value = request.headers.get(name) if name else None
            if value is not None:
                headers[name] = value
    for name in headers:
        if name in _RESERVED_HEADERS or not name.isascii() or not name.strip():
            raise InvalidRequest(f"header {name!r} cannot be forwarded to an MCP server")
    return headers


def _timeout(request: Request, settings: Settings) -> float:
    raw = request.headers.get("timeout")
    if raw is None:
        return settings.call_timeout
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest("the Timeout header must be a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest("the Timeout header must be a positive number of seconds")
    return min(value, settings.max_call_timeout)


def _pool(request: Request) -> SessionPool:
    pool: SessionPool = request.app.state.pool
    return pool


@_endpoint
async def serv_pong(request: Request, call: _Call) -> Any:
    """``POST /v1/serv/pong``: open (or reuse) a session and ping the server."""
    return await _pool(request).ping(call.target, call.timeout)


@_endpoint
async def tool_list(request: Request, call: _Call) -> Any:
    """``POST /v1/tool/list``: the server's tools ``[{name, description, inputSchema, ...}]``."""
    return await _pool(request).list_tools(call.target, call.timeout)


@_endpoint
async def tool_call(request: Request, call: _Call) -> Any:
    """``POST /v1/tool/call``: call ``name`` with ``arguments``; data is the CallToolResult."""
    name = call.body.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("name is required and must be a non-empty string")
    arguments = call.body.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise InvalidRequest("arguments must be a JSON object")
    return await _pool(request).call_tool(call.target, name, arguments, call.timeout)


async def health(request: Request) -> Response:
    """``GET /health``: liveness, with the number of open pooled sessions."""
    return _json(200, {"status": "ok", "sessions": _pool(request).stats()["open"]})


async def pool_stats(request: Request) -> Response:
    """``GET /v1/pool``: open sessions (no header values) and sessions created per server."""
    return _json(200, {"code": 200, "message": "success", "data": _pool(request).stats()})
