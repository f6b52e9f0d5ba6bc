"""Which MCP servers the bridge may reach, and over which transport.

Two small policies, both parsed once from the environment by :mod:`mcp_client.settings`:

* the **allowlist** (``MCP_ALLOWED_SERVERS``): entries are URL prefixes (``http://h:1/mcp``,
  matched on a path boundary, so ``http://h:1`` does not admit ``http://h:10``) or bare
  ``host`` / ``host:port`` entries. ``*`` admits every server on a global address; so does an
  unset or empty allowlist (logged as a warning at startup). Listed servers are trusted even on
  loopback or private addresses; unlisted ones must be global (:mod:`mcp_client.addresses`).
* the **transport choice**: an explicit ``transport`` in the request wins, then the first
  ``MCP_TRANSPORTS`` rule (``prefix=sse|streamable_http``) whose prefix matches, then the URL
  path (``.../sse`` means legacy SSE, ``.../mcp`` streamable HTTP), else ``auto``: try
  streamable HTTP and fall back to SSE when the server rejects it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp_client.errors import InvalidRequest

__all__ = [
    "AllowRule",
    "ServerTarget",
    "Transport",
    "TransportRule",
    "check_url",
    "header_items",
    "is_allowed",
    "parse_allowlist",
    "parse_transport_rules",
    "resolve_transport",
]


class Transport(enum.StrEnum):
    """An MCP client transport; ``auto`` means "detect from the URL and the server's answer"."""

    AUTO = "auto"
    STREAMABLE_HTTP = "streamable_http"
    SSE = "sse"

    @classmethod
    def parse(cls, text: str) -> Transport:
        """Parse a transport name, accepting common spellings (``streamableHttp``, ``http``)."""
        normal = text.strip().lower().replace("-", "_")
        aliases = {"streamablehttp": cls.STREAMABLE_HTTP, "http": cls.STREAMABLE_HTTP}
        if normal in aliases:
            return aliases[normal]
        try:
            return cls(normal)
        except ValueError:
            raise InvalidRequest(
                f"unknown transport {text!r} (expected auto, sse or streamable_http)"
            ) from None


@dataclass(frozen=True)
class AllowRule:
    """One allowlist entry: a URL prefix, or a host with an optional port."""

    prefix: str | None = None
    host: str | None = None
    port: int | None = None

    def admits(self, url: str) -> bool:
        """Whether this rule admits the (already validated) ``url``."""
        if self.prefix is not None:
            return _has_prefix(url, self.prefix)
        parts = urlsplit(url)
        if parts.hostname != self.host:
            return False
        return self.port is None or _port_of(url) == self.port


@dataclass(frozen=True)
class TransportRule:
    """``MCP_TRANSPORTS`` entry: URLs starting with ``prefix`` use ``transport``."""

    prefix: str
    transport: Transport


@dataclass(frozen=True)
class ServerTarget:
    """One pooled connection's identity: the URL, the transport and the forwarded headers.

    Headers are part of the identity because they carry credentials (``Cookie``, API keys):
    callers with different headers must never share a session.
    """

    url: str
    transport: Transport
    headers: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        # Header values may be secrets: show only their names.
        names = ",".join(name for name, _ in self.headers)
        return (
            f"ServerTarget(url={self.url!r}, transport={self.transport.value}, headers=[{names}])"
        )


def check_url(url: object) -> str:
    """Validate a ``server_url``: an absolute ``http(s)`` URL with a host; returns it stripped."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("server_url is required and must be a non-empty string")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("server_url must be an absolute http(s) URL")
    try:
        _ = parts.port
    except ValueError:
        raise InvalidRequest("server_url has an invalid port") from None
    return url


def is_allowed(url: str, rules: Sequence[AllowRule] | None) -> bool:
    """Whether ``url`` may be reached; ``rules is None`` means "no allowlist configured"."""
    if rules is None:
        return True
    return any(rule.admits(url) for rule in rules)


def resolve_transport(url: str, requested: Transport, rules: Sequence[TransportRule]) -> Transport:
    """Pick the transport for ``url`` (see the module docstring for the order)."""
    if requested is not Transport.AUTO:
        return requested
    for rule in rules:
        if _has_prefix(url, rule.prefix):
            return rule.transport
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/sse"):
        return Transport.SSE
    if path.endswith("/mcp"):
        return Transport.STREAMABLE_HTTP
    return Transport.AUTO


def parse_allowlist(text: str | None) -> tuple[AllowRule, ...] | None:
    """Parse ``MCP_ALLOWED_SERVERS``; ``None`` (allow all) when unset, empty or ``*``."""
    entries = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not entries or "*" in entries:
        return None
    rules: list[AllowRule] = []
    for entry in entries:
        if "://" in entry:
            rules.append(AllowRule(prefix=check_url(entry)))
            continue
        parts = urlsplit("//" + entry)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or parts.path or parts.username:
            raise ValueError(f"MCP_ALLOWED_SERVERS: bad entry {entry!r} (use a URL or host[:port])")
        rules.append(AllowRule(host=parts.hostname, port=port))
    return tuple(rules)


def parse_transport_rules(text: str | None) -> tuple[TransportRule, ...]:
    """Parse ``MCP_TRANSPORTS``: comma-separated ``url_prefix=transport`` pairs."""
    rules: list[TransportRule] = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        prefix, sep, name = item.strip().rpartition("=")
        if not sep or not prefix:
            raise ValueError(f"MCP_TRANSPORTS: bad entry {item!r} (use url_prefix=transport)")
        rules.append(TransportRule(prefix=check_url(prefix), transport=Transport.parse(name)))
    return tuple(rules)


def header_items(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Canonical, hashable form of forwarded headers (lower-case names, sorted)."""
    return tuple(sorted((name.lower(), value) for name, value in headers.items()))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _port_of(url: str) -> int | None:
    parts = urlsplit(url)
    return parts.port or _DEFAULT_PORTS.get(parts.scheme)


def _has_prefix(url: str, prefix: str) -> bool:
    """Prefix match on a boundary: the prefix ends with ``/`` or is followed by ``/ ? #``."""
    if not url.startswith(prefix):
        return False
    rest = url[len(prefix) :]
    return not rest or prefix.endswith("/") or rest[0] in "/?#"
