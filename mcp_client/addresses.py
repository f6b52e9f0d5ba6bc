"""Which addresses the bridge may connect to: the SSRF guard (DESIGN §10).

The bridge connects wherever a caller's ``server_url`` points, so without a guard it is a way
into the network it runs in (the cloud metadata service, Redis, the tool service, anything on
loopback). Unless ``MCP_ALLOWED_SERVERS`` lists the servers (an operator's choice, trusted even
on private addresses), a target is refused when its host is, or resolves to, an address that is
not global unicast: loopback, private, link-local, unspecified, multicast, reserved, shared
(CGNAT) and the other special ranges, and the IPv6 forms that carry such an IPv4 address
(IPv4-mapped ``::ffff:0:0/96``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``, Teredo
``2001::/32``).

DNS rebinding: a name checked now may resolve elsewhere at connect time. So the check is made
again for every HTTP request the MCP SDK sends, by :class:`GuardedTransport`, which then connects
to the very address it checked (the URL's host is kept for the ``Host`` header and, over TLS,
for SNI and certificate verification). Every resolved address must pass, not just the first.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2

from mcp_client.errors import AddressNotAllowed, UpstreamUnavailable

__all__ = [
    "GuardedTransport",
    "Policy",
    "Resolver",
    "checked_address",
    "guarded_client",
    "listed_client",
    "refusal",
    "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
Policy = Callable[[IPAddress], "str | None"]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 transition form carries, and the form's name."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.teredo is not None:
        return "Teredo", address.teredo[1]  # the client's address (the server is a relay)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why the bridge must not connect to ``address`` (``"loopback"``, ...); ``None`` when it
    is a global unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            form, ipv4 = embedded
            reason = refusal(ipv4)
            if reason is not None:
                return f"{reason} ({form} form of {ipv4})"
            if form != "Teredo":
                return None  # a global IPv4 address in another form
        if address in _NAT64_LOCAL:
            return "local-use NAT64"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for reason, applies in checks:
        if applies:
            return reason
    return None if address.is_global else "non-global"


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal: itself), in the resolver's order."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UpstreamUnavailable(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_address(
    host: str, port: int, resolver: Resolver = resolve, policy: Policy = refusal
) -> str:
    """The address to connect to for ``host``: the first it resolves to, once every one of
    them has passed ``policy`` (:func:`refusal`); else :class:`AddressNotAllowed`."""
    addresses = await resolver(host, port)
    if not addresses:
        raise UpstreamUnavailable(f"cannot resolve {host}: no address")
    for text in addresses:
        reason = policy(ipaddress.ip_address(text))
        if reason is not None:
            shown = host if text == host else f"{host} ({text})"
            raise AddressNotAllowed(
                f"server_url host {shown} is a {reason} address; the bridge reaches such"
                " servers only when MCP_ALLOWED_SERVERS lists them"
            )
    return addresses[0]


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that checks the target of every request and connects to the address
    it checked (see the module docstring).

    Meant for one client per server, as the bridge uses it: connections are pooled by address,
    so two host names of one address would share them.
    """

    def __init__(self, resolver: Resolver = resolve, policy: Policy = refusal) -> None:
        self._resolver = resolver
        self._policy = policy
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        address = await checked_address(url.host, port, self._resolver, self._policy)
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions.setdefault("sni_hostname", url.host)
        pinned = httpx2.Request(
            request.method,
            url.copy_with(host=address),
            headers=request.headers,  # keeps Host: the name the caller gave
            stream=request.stream,
            extensions=extensions,
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """An ``httpx2`` client for the MCP SDK's transports (its client factory signature) whose
    every request goes through :class:`GuardedTransport`. Proxies from the environment are not
    used: a proxy would connect on the client's behalf, past the guard."""
    options: dict[str, Any] = {"headers": headers, "auth": auth, "trust_env": False}
    if timeout is not None:
        options["timeout"] = timeout
    return httpx2.AsyncClient(transport=GuardedTransport(), **options)


def listed_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """A plain ``httpx2`` client for the MCP SDK's transports (its client factory signature), for
    targets an operator listed in ``MCP_ALLOWED_SERVERS``: no address check, proxies from the
    environment honoured (httpx2's default). Written here so the bridge does not import the
    SDK's private ``mcp.shared._httpx_utils``; the SDK always passes a timeout."""
    options: dict[str, Any] = {"headers": headers, "auth": auth}
    if timeout is not None:
        options["timeout"] = timeout
    return httpx2.AsyncClient(**options)
