"""A real MCP server built with the official SDK (``MCPServer``, formerly FastMCP), for the tests.

Run as ``python -m tests.mcp_client.sdk_server --port N --transport http|sse [--path /x]``.
Besides its tools it serves ``GET /stats``: the distinct MCP session ids it has seen, how many
times each JSON-RPC method was requested, and the last forwarded headers it received, so the
tests can check pooling, caching and header forwarding from the server's side.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_METHOD = re.compile(rb'"method"\s*:\s*"([^"]+)"')
_FORWARDED = ("cookie", "x-api-key", "x-tenant")


class _Observed:
    """What the server saw on the wire (one process serves one test server)."""

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.methods: Counter[str] = Counter()
        self.headers: dict[str, str] = {}


def build_server(observed: _Observed) -> MCPServer:
    """The SDK server with the tools the bridge tests call."""
    mcp = MCPServer("sdk-test-server")

    @mcp.tool(description="Echoes back the input string")
    def echo(message: str) -> str:
        return f"Echo: {message}"

    @mcp.tool(description="Returns the sum of two numbers")
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.tool(description="Always fails with a tool error")
    def fail(reason: str = "boom") -> str:
        raise ToolError(f"tool failed: {reason}")

    @mcp.tool(description="Answers with a JSON-RPC error instead of a result")
    def protocol_error() -> str:
        raise MCPError(INVALID_PARAMS, "rejected by the server")

    @mcp.tool(description="Sleeps, then answers")
    async def slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "done"

    @mcp.custom_route("/stats", methods=["GET"])
    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "sessions": sorted(observed.sessions),
                "methods": dict(observed.methods),
                "headers": observed.headers,
            }
        )

    return mcp


def observe(app: Any, observed: _Observed) -> Any:
    """ASGI wrapper recording session ids, JSON-RPC methods and forwarded headers."""

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        session = headers.get("mcp-session-id")
        query = dict(
            part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
        )
        session = session or query.get("session_id")
        if session:
            observed.sessions.add(session)
        for name in _FORWARDED:
            if name in headers:
                observed.headers[name] = headers[name]

        async def sniffing_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                for method in _METHOD.findall(message.get("body", b"")):
                    observed.methods[method.decode()] += 1
            return message

        await app(scope, sniffing_receive, send)

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=["http", "sse"], required=True)
    parser.add_argument("--path", default=None, help="endpoint path (default /mcp or /sse)")
    args = parser.parse_args()
    observed = _Observed()
    mcp = build_server(observed)
    if args.transport == "http":
        app = mcp.streamable_http_app(streamable_http_path=args.path or "/mcp")
    else:
        app = mcp.sse_app(sse_path=args.path or "/sse")
    uvicorn.run(observe(app, observed), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
