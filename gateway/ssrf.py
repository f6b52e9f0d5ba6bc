"""The SSRF guard of outgoing callbacks: which URLs the gateway may call on a client's behalf.

A host is resolved and every address must be public unless the host, or a CIDR holding the
address, is allowlisted; the request then goes to the very address that was checked (``Host``
and TLS SNI keep the name), so a DNS answer that changes in between (rebinding) cannot redirect
it.

*Public* is decided by :func:`is_public_address`. IPv6 has forms that carry an IPv4 address and
reach it through a translator or tunnel; each is judged by what it reaches:

- IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96`` (RFC 6052) and 6to4 ``2002::/16``
  (RFC 3056) are as public as the IPv4 address they embed: ``[2002:7f00:1::]`` is 127.0.0.1,
  ``[64:ff9b::a9fe:a9fe]`` the metadata service 169.254.169.254;
- Teredo ``2001::/32`` (RFC 4380, the server and the obfuscated client), IPv4-compatible
  ``::/96`` (deprecated by RFC 4291) and local-use NAT64 ``64:ff9b:1::/48`` (RFC 8215, whose
  mapping only the local network knows) are refused whatever they embed.

The standard library's flags alone do not say this: they call ``2002:7f00:1::`` global, and
which transition ranges they count as private has changed between Python releases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from gateway.errors import GatewayError

__all__ = [
    "Resolver",
    "Target",
    "TargetPolicy",
    "TargetRefused",
    "check_target",
    "embedded_ipv4",
    "is_public_address",
    "system_resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``; raises ``OSError`` when the name does not resolve."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_JUDGED_BY_IPV4_ONLY = (_NAT64,)  # the standard library calls all of ::/8 reserved
_ALWAYS_REFUSED = (_NAT64_LOCAL, _IPV4_COMPATIBLE, _TEREDO)


class TargetRefused(GatewayError):
    """The callback URL is not one the gateway will call (bad scheme, non-public address)."""

    code = "invalid_request"
    status_code = 422


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 transition form carries (none for other addresses)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)
    return ()


def _plainly_public(ip: IPAddress) -> bool:
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def is_public_address(ip: IPAddress) -> bool:
    """Whether ``ip`` reaches the public internet only: not private, loopback, link-local,
    multicast, reserved, unspecified or shared, directly or through an IPv6 transition form."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _plainly_public(ip)
    if any(ip in net for net in _ALWAYS_REFUSED):
        return False
    inner = embedded_ipv4(ip)
    if ip.ipv4_mapped is None and not any(ip in net for net in _JUDGED_BY_IPV4_ONLY):
        if not _plainly_public(ip):
            return False
    return all(_plainly_public(v4) for v4 in inner)


class TargetPolicy:
    """Which hosts and addresses callbacks may reach: public ones, plus the allowlist."""

    def __init__(self, allow: tuple[str, ...]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in allow:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry:
                    raise ValueError(f"WEBHOOK_ALLOW_HOSTS: {entry!r} is not a CIDR") from None
                self.hosts.add(entry.lower().rstrip("."))

    def address_allowed(self, ip: IPAddress) -> bool:
        """Public, or inside an allowlisted network of its own IP version."""
        if any(ip in net for net in self.networks if net.version == ip.version):
            return True
        return is_public_address(ip)


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A checked callback: the URL to request (pinned to ``address`` when one was checked)."""

    url: str
    host: str
    address: str | None

    def request_args(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """URL, extra headers and httpx extensions that make the request reach ``address``."""
        if self.address is None:
            return self.url, {}, {}
        parts = httpx.URL(self.url)
        pinned = parts.copy_with(host=self.address)
        extensions = {"sni_hostname": self.host} if parts.scheme == "https" else {}
        return str(pinned), {"Host": parts.netloc.decode("ascii")}, extensions


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_target(url: str, policy: TargetPolicy, resolve: Resolver) -> Target:
    """Resolve ``url``'s host and check it; raises ``TargetRefused`` (or ``OSError`` for DNS)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"callbackUrl is not a valid URL: {exc}") from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        raise TargetRefused("callbackUrl must be an http(s) URL with a host")
    if host in policy.hosts:
        return Target(url, host, None)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        async with asyncio.timeout(5):
            addresses = await resolve(host, port)
    if not addresses:
        raise OSError(f"{host} has no address")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not policy.address_allowed(ip):
            raise TargetRefused(
                f"callbackUrl host {host} resolves to a non-public address ({ip}); "
                "allow it with WEBHOOK_ALLOW_HOSTS"
            )
    return Target(url, host, addresses[0].split("%", 1)[0])
