"""Request handling: input validation, the allowlist, header forwarding, the CLI entry point."""

from __future__ import annotations

import httpx
import orjson
import pytest

from mcp_client import Settings
from mcp_client.target import parse_allowlist
from tests.helpers import spawn_service
from tests.mcp_client.conftest import Bridge, McpServer, running_bridge

pytestmark = pytest.mark.anyio

GOOD_URL = "http://127.0.0.1:9/mcp"


def _body(**fields: object) -> bytes:
    return orjson.dumps({"server_url": GOOD_URL, **fields})


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/tool/list", b"not json", {}),
        ("/v1/tool/list", b"[1, 2]", {}),
        ("/v1/tool/list", b"{}", {}),
        ("/v1/tool/list", _body(server_url="ftp://example.com/x"), {}),
        ("/v1/tool/list", _body(server_url="http://127.0.0.1:99999/mcp"), {}),
        ("/v1/tool/list", _body(transport="carrier-pigeon"), {}),
        ("/v1/tool/call", _body(), {}),
        ("/v1/tool/call", _body(name="echo", arguments=[1]), {}),
        ("/v1/tool/list", _body(), {"Timeout": "soon"}),
        ("/v1/tool/list", _body(), {"Timeout": "-1"}),
        ("/v1/tool/list", _body(), {"X-Server-Keys": "{bad"}),
        ("/v1/tool/list", _body(), {"X-Server-Keys": '{"Host": "evil"}'}),
        ("/v1/serv/pong", _body(server_url=42), {}),
    ],
    ids=[
        "body-not-json", "body-not-object", "no-server-url", "not-http", "bad-port",
        "unknown-transport", "call-without-name", "arguments-not-object", "timeout-not-number",
        "timeout-negative", "server-keys-not-json", "server-keys-reserved-header",
        "server-url-not-string",
    ],
)  # fmt: skip
async def test_bad_input_gets_a_400_in_both_error_shapes(
    bridge: Bridge, path: str, body: bytes, headers: dict[str, str]
) -> None:
    response = await bridge.client.post(bridge.url + path, content=body, headers=headers)

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == 400
    assert payload["data"] is None
    assert payload["error"]["code"] == "invalid_request"
    assert payload["message"] == payload["error"]["message"] != ""


async def test_a_disallowed_server_is_refused_when_the_allowlist_is_set(
    mcp_servers: dict[str, McpServer],
) -> None:
    allowed, other = mcp_servers["sdk-http"], mcp_servers["everything-http"]
    settings = Settings(allowed_servers=parse_allowlist(f"127.0.0.1:{allowed.port}"))
    async with running_bridge(settings) as bridge:
        ok = await bridge.post("/v1/tool/list", {"server_url": allowed.url})
        refused = await bridge.post("/v1/tool/list", {"server_url": other.url})
        pool = await bridge.pool()

    assert ok.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["code"] == 403
    assert refused.json()["error"]["code"] == "server_not_allowed"
    assert other.url not in pool["created"]


async def test_cookie_and_server_keys_are_forwarded_and_keep_sessions_apart(
    bridge: Bridge, mcp_servers: dict[str, McpServer]
) -> None:
    server = mcp_servers["sdk-http"]
    body = {"server_url": server.url, "name": "echo", "arguments": {"message": "hi"}}

    as_json = await bridge.client.post(
        bridge.url + "/v1/tool/call",
        json=body,
        headers={"Cookie": "sid=alice", "X-Server-Keys": '{"X-Api-Key": "k-alice"}'},
    )
    seen_alice = server.stats()["headers"]
    as_names = await bridge.client.post(  # JoyAgent style: names of headers to copy
        bridge.url + "/v1/tool/call",
        json=body,
        headers={"Cookie": "sid=bob", "X-Server-Keys": "X-Tenant", "X-Tenant": "t-bob"},
    )
    seen_bob = server.stats()["headers"]
    pool = await bridge.pool()

    assert as_json.status_code == 200 and as_names.status_code == 200
    assert seen_alice == {"cookie": "sid=alice", "x-api-key": "k-alice"}
    assert seen_bob["cookie"] == "sid=bob" and seen_bob["x-tenant"] == "t-bob"
    assert pool["created"] == {server.url: 2}  # different credentials, different sessions


async def test_health_answers_with_the_open_session_count(
    bridge: Bridge, mcp_servers: dict[str, McpServer]
) -> None:
    empty = (await bridge.client.get(bridge.url + "/health")).json()
    await bridge.post("/v1/serv/pong", {"server_url": mcp_servers["everything-sse"].url})
    one = (await bridge.client.get(bridge.url + "/health")).json()

    assert empty == {"status": "ok", "sessions": 0}
    assert one == {"status": "ok", "sessions": 1}


def test_the_cli_serves_the_app_with_settings_from_the_environment(
    mcp_servers: dict[str, McpServer],
) -> None:
    allowed, other = mcp_servers["everything-sse"], mcp_servers["sdk-sse"]
    env = {"MCP_ALLOWED_SERVERS": allowed.url, "MCP_CONNECT_TIMEOUT": "5"}
    with spawn_service("mcp_client", env=env, health="/health") as url:
        listed = httpx.post(url + "/v1/tool/list", json={"server_url": allowed.url}, timeout=20)
        refused = httpx.post(url + "/v1/tool/list", json={"server_url": other.url}, timeout=20)

    assert listed.status_code == 200
    assert "get-sum" in {tool["name"] for tool in listed.json()["data"]}
    assert refused.status_code == 403


async def test_with_a_service_token_every_route_but_health_needs_it(
    mcp_servers: dict[str, McpServer],
) -> None:
    server = mcp_servers["sdk-http"]
    settings = Settings(
        connect_timeout=5,
        service_token="br1dge-token",
        allowed_servers=parse_allowlist(server.base),
    )
    body = {"server_url": server.url}
    async with running_bridge(settings) as bridge:
        refused = [
            await bridge.post("/v1/tool/list", body),
            await bridge.post("/v1/tool/list", body, Authorization="Bearer wrong"),
            await bridge.client.get(bridge.url + "/v1/pool"),
        ]
        health = await bridge.client.get(bridge.url + "/health")
        listed = await bridge.post("/v1/tool/list", body, Authorization="Bearer br1dge-token")
    for response in refused:
        assert response.status_code == 401
        answer = response.json()
        assert answer["code"] == 401 and answer["data"] is None
        assert answer["error"]["code"] == "unauthorized"
    assert health.status_code == 200
    assert listed.status_code == 200 and listed.json()["code"] == 200
    assert "br1dge-token" not in repr(settings)
