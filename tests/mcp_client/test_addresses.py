"""The bridge's SSRF guard: which addresses it refuses, and that it refuses before connecting.

No test here sends anything to a non-loopback address: other addresses are only classified
(``refusal``) or handed to a fake resolver whose verdict is reached before any connection.
End-to-end refusals use loopback forms, on a port nothing listens on.
"""

from __future__ import annotations

import ipaddress

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_client import AddressNotAllowed, SessionPool, Settings
from mcp_client.addresses import GuardedTransport, checked_address, refusal
from mcp_client.target import ServerTarget, Transport
from tests.helpers import free_port, serve_app
from tests.mcp_client.conftest import LOOPBACK, McpServer, running_bridge

pytestmark = pytest.mark.anyio

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared (CGNAT)
    "224.0.1.1",  # multicast, though "global" to the ipaddress module
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:db8::1",  # documentation
]
GLOBAL = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_and_their_ipv6_forms_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", GLOBAL)
def test_global_unicast_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_reason_names_the_form_and_the_address_it_carries() -> None:
    assert refusal(ipaddress.ip_address("2002:7f00:1::")) == "loopback (6to4 form of 127.0.0.1)"
    assert refusal(ipaddress.ip_address("169.254.169.254")) == "link-local"


async def test_a_name_is_refused_when_any_of_its_addresses_is_not_global() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "10.0.0.5"]  # never connected to: the verdict comes first

    with pytest.raises(AddressNotAllowed, match=r"10\.0\.0\.5"):
        await checked_address("mixed.test", 80, resolver)


async def test_the_bridge_refuses_loopback_targets_with_a_403_in_its_answer_shape() -> None:
    port = free_port()  # nothing listens: a guard that failed would get a 502, not a 403
    urls = [
        f"http://127.0.0.1:{port}/mcp",
        f"http://localhost:{port}/mcp",
        f"http://[::1]:{port}/mcp",
        f"http://[::ffff:127.0.0.1]:{port}/sse",
        f"http://2130706433:{port}/mcp",  # 127.0.0.1 as one decimal number
    ]
    async with running_bridge(Settings(connect_timeout=2)) as bridge:
        answers = [await bridge.post("/v1/tool/list", {"server_url": url}) for url in urls]
        pong = await bridge.post("/v1/serv/pong", {"server_url": urls[0]})
        stats = await bridge.pool()
    for url, response in zip(urls, answers, strict=True):
        assert response.status_code == 403, (url, response.text)
        body = response.json()
        assert (body["code"], body["data"]) == (403, None)
        assert body["error"]["code"] == "address_not_allowed"
        assert "MCP_ALLOWED_SERVERS" in body["error"]["message"]
    assert pong.status_code == 403
    assert stats["created"] == {}


async def test_the_allowlist_lets_a_loopback_server_through(
    mcp_servers: dict[str, McpServer],
) -> None:
    server = mcp_servers["sdk-http"]
    async with running_bridge(Settings(connect_timeout=5)) as guarded:
        refused = await guarded.post("/v1/tool/list", {"server_url": server.url})
    async with running_bridge(Settings(connect_timeout=5, allowed_servers=LOOPBACK)) as listed:
        allowed = await listed.post("/v1/tool/list", {"server_url": server.url})
    assert refused.status_code == 403
    assert allowed.status_code == 200
    assert "echo" in {tool["name"] for tool in allowed.json()["data"]}


@pytest.mark.parametrize("kind", ["sdk-http", "sdk-sse"])
async def test_sessions_check_the_address_again_when_they_connect(
    mcp_servers: dict[str, McpServer], kind: str
) -> None:
    server = mcp_servers[kind]
    transport = Transport.SSE if kind.endswith("sse") else Transport.STREAMABLE_HTTP
    before = server.stats()
    with anyio.fail_after(20):
        async with SessionPool(Settings(connect_timeout=5)).running() as pool:
            with pytest.raises(AddressNotAllowed):
                await pool.list_tools(ServerTarget(server.url, transport), timeout=5)
    assert server.stats() == before  # the server saw nothing


async def test_the_transport_connects_to_the_address_it_checked_and_keeps_the_host_name() -> None:
    async def echo_host(request: Request) -> JSONResponse:
        return JSONResponse({"host": request.headers["host"]})

    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]  # "mcp.test" resolves nowhere else: only pinning reaches it

    app = Starlette(routes=[Route("/", echo_host)])
    with serve_app(app) as server:
        port = int(server.url.rsplit(":", 1)[1])
        transport = GuardedTransport(resolver, policy=lambda address: None)
        async with httpx2.AsyncClient(transport=transport) as client:
            answer = await client.get(f"http://mcp.test:{port}/")
        refusing = GuardedTransport(resolver)
        async with httpx2.AsyncClient(transport=refusing) as client:
            with pytest.raises(AddressNotAllowed):
                await client.get(f"http://mcp.test:{port}/")
    assert answer.json() == {"host": f"mcp.test:{port}"}
    assert answer.request.url.host == "mcp.test"
    assert resolved == ["mcp.test", "mcp.test"]
