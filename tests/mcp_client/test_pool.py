"""Session pooling: one session per server, reconnects, transport detection, shutdown."""

from __future__ import annotations

import socket
import time

import anyio
import pytest

from mcp_client import SessionPool, Settings, UpstreamTimeout
from mcp_client.target import ServerTarget, Transport
from tests.helpers import free_port
from tests.mcp_client.conftest import (
    LOOPBACK,
    SERVER_KINDS,
    Bridge,
    McpServer,
    running_bridge,
    running_servers,
)

pytestmark = pytest.mark.anyio


async def test_fifty_concurrent_calls_share_one_pooled_session_per_server(
    mcp_servers: dict[str, McpServer],
) -> None:
    servers = list(mcp_servers.values())
    sdk_before = {s.kind: len(s.stats()["sessions"]) for s in servers if s.is_sdk}  # type: ignore[arg-type]
    answers: dict[tuple[str, int], str] = {}

    async with running_bridge() as bridge:

        async def call(server: McpServer, n: int) -> None:
            response = await bridge.post(
                "/v1/tool/call",
                {"server_url": server.url, "name": "echo", "arguments": {"message": str(n)}},
            )
            assert response.status_code == 200, response.text
            answers[server.kind, n] = response.json()["data"]["content"][0]["text"]

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for server in servers:
                    for n in range(50):
                        tg.start_soon(call, server, n)
        pool = await bridge.pool()

    assert answers == {(s.kind, n): f"Echo: {n}" for s in servers for n in range(50)}
    assert pool["created"] == {server.url: 1 for server in servers}
    for server in servers:
        if server.is_sdk:  # the server's own count of sessions it saw
            seen = len(server.stats()["sessions"])  # type: ignore[arg-type]
            assert seen == sdk_before[server.kind] + 1


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_a_server_that_died_between_calls_is_reconnected_on_the_next_call(
    kind: str, bridge: Bridge
) -> None:
    server = McpServer(kind)
    with running_servers(server):
        body = {"server_url": server.url, "name": "echo", "arguments": {"message": "one"}}
        first = await bridge.post("/v1/tool/call", body)

        server.kill()
        server.start()  # same port, new process: the old session is gone
        second = await bridge.post("/v1/tool/call", {**body, "arguments": {"message": "two"}})

        pool = await bridge.pool()

    assert first.status_code == 200
    assert second.status_code == 200, second.text
    assert second.json()["data"]["content"] == [{"type": "text", "text": "Echo: two"}]
    assert pool["created"] == {server.url: 2}


async def test_a_dead_server_fails_fast_after_one_reconnect_attempt(bridge: Bridge) -> None:
    server = McpServer("everything-http")
    with running_servers(server):
        body = {"server_url": server.url, "name": "echo", "arguments": {"message": "one"}}
        assert (await bridge.post("/v1/tool/call", body)).status_code == 200
        server.kill()
        started = time.monotonic()

        response = await bridge.post("/v1/tool/call", body)

    assert time.monotonic() - started < 5
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


async def test_auto_detection_falls_back_to_sse_when_streamable_http_is_rejected(
    bridge: Bridge,
) -> None:
    server = McpServer("sdk-sse", path="/events")  # neither /sse nor /mcp: nothing to guess from
    with running_servers(server):
        pong = await bridge.post("/v1/serv/pong", {"server_url": server.url})
        call = await bridge.post(
            "/v1/tool/call",
            {"server_url": server.url, "name": "echo", "arguments": {"message": "auto"}},
        )
        forced = await bridge.post(
            "/v1/serv/pong", {"server_url": server.url, "transport": "streamable_http"}
        )

    assert pong.status_code == 200
    assert pong.json()["data"]["transport"] == "sse"
    assert call.json()["data"]["content"][0]["text"] == "Echo: auto"
    assert forced.status_code == 502
    assert forced.json()["error"]["code"] == "transport_rejected"


async def test_a_server_that_accepts_but_never_answers_hits_the_connect_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
        async with running_bridge(
            Settings(connect_timeout=0.5, allowed_servers=LOOPBACK)
        ) as bridge:
            started = time.monotonic()
            response = await bridge.post("/v1/tool/list", {"server_url": url})
            elapsed = time.monotonic() - started

    assert elapsed < 5
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


async def test_the_pool_closes_every_session_when_it_stops(
    mcp_servers: dict[str, McpServer],
) -> None:
    targets = [
        ServerTarget(mcp_servers[kind].url, Transport.AUTO) for kind in ("sdk-http", "sdk-sse")
    ]
    pool = SessionPool(Settings(connect_timeout=5, allowed_servers=LOOPBACK))
    with anyio.fail_after(20):
        async with pool.running():
            for target in targets:
                result = await pool.call_tool(target, "echo", {"message": "x"}, timeout=5)
                assert result["content"] == [{"type": "text", "text": "Echo: x"}]
            assert pool.stats()["open"] == 2

    assert pool.stats()["open"] == 0
    assert pool.stats()["created"] == {target.url: 1 for target in targets}


async def test_a_slow_call_raises_upstream_timeout_from_the_pool(
    mcp_servers: dict[str, McpServer],
) -> None:
    target = ServerTarget(mcp_servers["sdk-sse"].url, Transport.SSE)
    with anyio.fail_after(20):
        async with SessionPool(Settings(allowed_servers=LOOPBACK)).running() as pool:
            with pytest.raises(UpstreamTimeout):
                await pool.call_tool(target, "slow", {"seconds": 30}, timeout=0.3)


async def test_beyond_max_sessions_the_least_recently_used_idle_session_is_closed(
    mcp_servers: dict[str, McpServer],
) -> None:
    first, second = (
        ServerTarget(mcp_servers[kind].url, Transport.AUTO)
        for kind in ("sdk-http", "everything-http")
    )
    pool = SessionPool(Settings(max_sessions=1, allowed_servers=LOOPBACK))
    with anyio.fail_after(20):
        async with pool.running():
            await pool.call_tool(first, "echo", {"message": "1"}, timeout=5)
            await pool.call_tool(second, "echo", {"message": "2"}, timeout=5)
            stats = pool.stats()

    assert stats["open"] == 1
    assert [session["serverUrl"] for session in stats["sessions"]] == [second.url]
    assert stats["created"] == {first.url: 1, second.url: 1}


async def test_an_unreachable_server_without_a_path_hint_is_not_retried_over_sse(
    bridge: Bridge,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/"

    response = await bridge.post("/v1/serv/pong", {"server_url": url})

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "sse" not in response.json()["error"]["message"].lower()
