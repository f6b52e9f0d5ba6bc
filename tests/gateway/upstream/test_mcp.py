"""McpBridgeClient against a fake MCP client service answering ``{code, message, data}``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.upstream import (
    McpBridgeClient,
    McpTool,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRemoteError,
    UpstreamSettings,
)
from tests.helpers import free_port, serve_app

pytestmark = pytest.mark.anyio

GOOD = "http://mcp.example/sse"
ECHO = {
    "name": "echo",
    "description": "Echoes back the input",
    "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}},
    "annotations": {"readOnlyHint": True},
}
calls: list[dict[str, Any]] = []


def answer(code: int, message: str, data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "data": data}, status_code=status)


async def tool_list(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if body["server_url"] == GOOD:
        return answer(200, "success", [ECHO, {"description": "nameless"}])
    if body["server_url"] == "joyagent-style-error":
        return answer(500, "connection refused", None)
    if body["server_url"] == "http-error":
        return PlainTextResponse("bad gateway", status_code=502)
    return answer(404, "unknown server", None, status=404)


async def tool_call(request: Request) -> Response:
    body = orjson.loads(await request.body())
    calls.append(body)
    if body["name"] == "echo":
        text = f"Echo: {body['arguments']['message']}"
        return answer(
            200, "success", {"content": [{"type": "text", "text": text}], "isError": False}
        )
    if body["name"] == "fails_inside":
        content = [{"type": "text", "text": "bad input"}, {"type": "image", "data": "AA=="}]
        return answer(200, "success", {"content": content, "isError": True})
    return answer(500, f"tool {body['name']} not found", None, status=500)


async def pong(request: Request) -> Response:
    return answer(200, "pong", None)


async def not_an_envelope(request: Request) -> Response:
    return JSONResponse(["no", "envelope"])


APP = Starlette(
    routes=[
        Route("/v1/tool/list", tool_list, methods=["POST"]),
        Route("/v1/tool/call", tool_call, methods=["POST"]),
        Route("/v1/serv/pong", pong, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def settings() -> Iterator[UpstreamSettings]:
    with serve_app(APP) as server:
        yield UpstreamSettings(mcp_client_url=server.url, tool_timeout=10)


async def test_list_tools_returns_typed_tools(settings: UpstreamSettings) -> None:
    async with McpBridgeClient(settings) as client:
        tools = await client.list_tools(GOOD)
    assert tools == [
        McpTool(
            "echo",
            "Echoes back the input",
            ECHO["inputSchema"],  # type: ignore[arg-type]
            {"readOnlyHint": True},
        )
    ]
    assert tools[0].to_openai_tool("everything__echo") == {
        "type": "function",
        "function": {
            "name": "everything__echo",
            "description": "Echoes back the input",
            "parameters": ECHO["inputSchema"],
        },
    }


async def test_call_tool_sends_the_arguments_and_returns_the_result(
    settings: UpstreamSettings,
) -> None:
    async with McpBridgeClient(settings) as client:
        result = await client.call_tool(GOOD, "echo", {"message": "hi"})
    assert result.text == "Echo: hi"
    assert not result.is_error
    assert calls[-1] == {"server_url": GOOD, "name": "echo", "arguments": {"message": "hi"}}


async def test_a_tool_that_fails_inside_is_a_result_not_an_exception(
    settings: UpstreamSettings,
) -> None:
    async with McpBridgeClient(settings) as client:
        result = await client.call_tool(GOOD, "fails_inside", {})
    assert result.is_error
    assert result.text.splitlines() == ["bad input", '{"type":"image","data":"AA=="}']


async def test_a_code_other_than_200_in_an_http_200_answer_raises(
    settings: UpstreamSettings,
) -> None:
    async with McpBridgeClient(settings) as client:
        with pytest.raises(UpstreamRemoteError, match="connection refused") as caught:
            await client.list_tools("joyagent-style-error")
    assert caught.value.detail["code"] == 500
    assert caught.value.upstream_status == 200


async def test_a_code_other_than_200_with_a_matching_status_raises(
    settings: UpstreamSettings,
) -> None:
    async with McpBridgeClient(settings) as client:
        with pytest.raises(UpstreamRemoteError, match="not found") as caught:
            await client.call_tool(GOOD, "missing", {})
    assert caught.value.upstream_status == 500


async def test_an_http_error_without_an_envelope_raises_an_http_error(
    settings: UpstreamSettings,
) -> None:
    async with McpBridgeClient(settings) as client:
        with pytest.raises(UpstreamHTTPError) as caught:
            await client.list_tools("http-error")
    assert caught.value.upstream_status == 502


async def test_an_answer_that_is_not_an_envelope_is_a_protocol_error() -> None:
    app = Starlette(routes=[Route("/v1/tool/list", not_an_envelope, methods=["POST"])])
    with serve_app(app) as server:
        async with McpBridgeClient(UpstreamSettings(mcp_client_url=server.url)) as client:
            with pytest.raises(UpstreamProtocolError):
                await client.list_tools(GOOD)


async def test_ping_succeeds_on_pong(settings: UpstreamSettings) -> None:
    async with McpBridgeClient(settings) as client:
        await client.ping(GOOD)


async def test_an_unreachable_service_raises_a_connect_error() -> None:
    settings = UpstreamSettings(mcp_client_url=f"http://127.0.0.1:{free_port()}")
    async with McpBridgeClient(settings) as client:
        with pytest.raises(UpstreamConnectError):
            await client.list_tools(GOOD)
