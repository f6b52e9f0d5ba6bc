"""The bridge's HTTP API against real MCP servers, over both transports."""

from __future__ import annotations

import time

import pytest

from tests.helpers import free_port
from tests.mcp_client.conftest import Bridge, McpServer

pytestmark = pytest.mark.anyio

SUM_TOOL = {"sdk": "add", "everything": "get-sum"}


def _family(server: McpServer) -> str:
    return "sdk" if server.is_sdk else "everything"


def _text(data: dict[str, object]) -> str:
    content = data["content"]
    assert isinstance(content, list)
    return "".join(item["text"] for item in content if item["type"] == "text")


async def test_list_returns_the_tools_with_their_input_schemas(
    bridge: Bridge, mcp_server: McpServer
) -> None:
    response = await bridge.post("/v1/tool/list", {"server_url": mcp_server.url})

    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["message"]) == (200, "success")
    tools = {tool["name"]: tool for tool in body["data"]}
    assert {"echo", SUM_TOOL[_family(mcp_server)]} <= tools.keys()
    echo = tools["echo"]
    assert {"name", "description", "inputSchema", "annotations"} <= echo.keys()
    assert echo["description"] == "Echoes back the input string"
    assert echo["inputSchema"]["type"] == "object"
    assert echo["inputSchema"]["properties"]["message"]["type"] == "string"
    assert echo["inputSchema"]["required"] == ["message"]


async def test_calling_echo_and_sum_returns_the_right_content(
    bridge: Bridge, mcp_server: McpServer
) -> None:
    echo = await bridge.post(
        "/v1/tool/call",
        {"server_url": mcp_server.url, "name": "echo", "arguments": {"message": "hello"}},
    )
    total = await bridge.post(
        "/v1/tool/call",
        {
            "server_url": mcp_server.url,
            "name": SUM_TOOL[_family(mcp_server)],
            "arguments": {"a": 2, "b": 40},
        },
    )

    assert echo.status_code == 200 and total.status_code == 200
    echo_data, total_data = echo.json()["data"], total.json()["data"]
    assert echo_data["isError"] is False
    assert echo_data["content"] == [{"type": "text", "text": "Echo: hello"}]
    assert total_data["isError"] is False
    assert "42" in _text(total_data)


async def test_a_tool_error_comes_back_as_is_error(bridge: Bridge, mcp_server: McpServer) -> None:
    if mcp_server.is_sdk:
        body = {"server_url": mcp_server.url, "name": "fail", "arguments": {"reason": "nope"}}
        expected = "tool failed: nope"
    else:  # server-everything reports invalid arguments as a tool error
        body = {"server_url": mcp_server.url, "name": "echo", "arguments": {}}
        expected = "Input validation error"

    response = await bridge.post("/v1/tool/call", body)

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["isError"] is True
    assert expected in _text(data)


async def test_an_mcp_protocol_error_becomes_a_502_upstream_error(
    bridge: Bridge, mcp_servers: dict[str, McpServer]
) -> None:
    url = mcp_servers["sdk-http"].url

    response = await bridge.post("/v1/tool/call", {"server_url": url, "name": "protocol_error"})

    assert response.status_code == 502
    body = response.json()
    assert (body["code"], body["data"]) == (502, None)
    assert body["error"] == {"code": "upstream_error", "message": "rejected by the server"}


async def test_pong_reports_the_transport_that_answered(
    bridge: Bridge, mcp_server: McpServer
) -> None:
    response = await bridge.post("/v1/serv/pong", {"server_url": mcp_server.url})

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["transport"] == mcp_server.transport
    assert data["serverName"]


async def test_an_unreachable_server_gets_a_clear_error_quickly(bridge: Bridge) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    started = time.monotonic()

    response = await bridge.post("/v1/tool/call", {"server_url": url, "name": "echo"})

    assert time.monotonic() - started < 5
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == 502 and body["data"] is None
    assert body["error"]["code"] == "upstream_unavailable"
    assert url in body["error"]["message"]


async def test_the_timeout_header_limits_one_call_and_the_session_survives_it(
    bridge: Bridge, mcp_servers: dict[str, McpServer]
) -> None:
    url = mcp_servers["sdk-http"].url
    started = time.monotonic()

    slow = await bridge.client.post(
        bridge.url + "/v1/tool/call",
        json={"server_url": url, "name": "slow", "arguments": {"seconds": 30}},
        headers={"Timeout": "0.5"},
    )
    after = await bridge.post(
        "/v1/tool/call", {"server_url": url, "name": "echo", "arguments": {"message": "still"}}
    )

    assert time.monotonic() - started < 10
    assert slow.status_code == 504
    assert slow.json()["error"]["code"] == "timeout"
    assert after.status_code == 200
    assert _text(after.json()["data"]) == "Echo: still"
    assert (await bridge.pool())["created"] == {url: 1}


async def test_tool_lists_are_cached_briefly(
    bridge: Bridge, mcp_servers: dict[str, McpServer]
) -> None:
    server = mcp_servers["sdk-sse"]
    before = server.stats()["methods"].get("tools/list", 0)  # type: ignore[attr-defined]

    first = await bridge.post("/v1/tool/list", {"server_url": server.url})
    second = await bridge.post("/v1/tool/list", {"server_url": server.url})

    assert first.json()["data"] == second.json()["data"]
    assert server.stats()["methods"]["tools/list"] == before + 1  # type: ignore[index]
