"""The SSRF guard of callbacks (``gateway.ssrf``): IPv6 forms that carry a refused IPv4
address are refused like it. Pure classification, plus one submission through the API (its
target is the 6to4 form of loopback on the discard port, and its task never ends, so nothing
is ever sent to it even by a gateway whose guard lets it through)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from gateway.ssrf import TargetPolicy, TargetRefused, check_target, is_public_address
from gateway.tasks import TaskContext, TaskRegistry
from gateway.webhooks import WebhookSettings
from tests.helpers import serve_app

pytestmark = pytest.mark.anyio

REFUSED = {
    # 6to4 (2002:VVVV:VVVV::/48 holds the IPv4 address V)
    "2002:7f00:1::": "127.0.0.1",
    "2002:a00:1::1": "10.0.0.1",
    "2002:a9fe:a9fe::": "169.254.169.254",
    "2002:c0a8:101:1::5": "192.168.1.1",
    "2002:6440:1::": "100.64.0.1 (shared)",
    "2002::": "0.0.0.0",
    # NAT64, well-known prefix (RFC 6052): the IPv4 address is the last 32 bits
    "64:ff9b::7f00:1": "127.0.0.1",
    "64:ff9b::a00:1": "10.0.0.1",
    "64:ff9b::a9fe:a9fe": "169.254.169.254",
    "64:ff9b::ac10:1": "172.16.0.1",
    # NAT64 local-use prefix (RFC 8215): refused whatever it holds
    "64:ff9b:1::5db8:d822": "a public address behind a local translator",
    # Teredo: server 65.54.227.120, client 10.0.0.1 / 93.184.216.34 (bits inverted)
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": "client 10.0.0.1",
    "2001:0:4136:e378:8000:63bf:a247:27dd": "a public client: Teredo is refused anyway",
    # IPv4-mapped and IPv4-compatible
    "::ffff:a00:1": "10.0.0.1",
    "::ffff:a9fe:a9fe": "169.254.169.254",
    "::a00:1": "10.0.0.1 (compatible)",
    "::5db8:d822": "93.184.216.34 (compatible: deprecated, refused)",
    # plain IPv6
    "::1": "loopback",
    "fe80::1": "link-local",
    "fd00::1": "unique local",
}
PUBLIC = [
    "93.184.216.34",
    "2606:2800:220:1::1",
    "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
    "::ffff:5db8:d822",  # mapped 93.184.216.34
]


def test_ipv6_transition_forms_of_refused_ipv4_addresses_are_not_public() -> None:
    wrongly_public = [a for a in REFUSED if is_public_address(ipaddress.ip_address(a))]
    assert wrongly_public == []


def test_transition_forms_of_public_ipv4_addresses_stay_public() -> None:
    assert [a for a in PUBLIC if not is_public_address(ipaddress.ip_address(a))] == []


async def test_check_target_refuses_a_resolved_name_that_answers_a_transition_form() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["2606:2800:220:1::1", "64:ff9b::a9fe:a9fe"]

    with pytest.raises(TargetRefused, match="non-public address"):
        await check_target("https://hooks.example/h", TargetPolicy(()), resolve)
    allowed = TargetPolicy(("64:ff9b::/96",))
    target = await check_target("https://hooks.example/h", allowed, resolve)
    assert target.address == "2606:2800:220:1::1"


async def _never_ends(ctx: TaskContext) -> None:
    await asyncio.Event().wait()


async def test_a_6to4_loopback_callback_is_refused_at_submit() -> None:
    registry = TaskRegistry()
    registry.register(7, _never_ends)
    settings = dataclasses.replace(Settings.from_env({}), webhooks=WebhookSettings())
    with serve_app(create_app(settings, registry=registry)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            answers = [
                await client.post(
                    "/api/tasks", json={"query": "q", "agentType": 7, "callbackUrl": url}
                )
                for url in ("http://[2002:7f00:1::]:9/", "http://[64:ff9b::7f00:1]:9/")
            ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_request"
        assert "non-public address" in answer.json()["error"]["message"]
