"""The allowlist, transport selection and settings parsing (pure functions, no servers)."""

from __future__ import annotations

import pytest

from mcp_client import InvalidRequest, Settings
from mcp_client.target import (
    ServerTarget,
    Transport,
    is_allowed,
    parse_allowlist,
    parse_transport_rules,
    resolve_transport,
)


def test_an_unset_or_star_allowlist_allows_everything() -> None:
    assert parse_allowlist(None) is None
    assert parse_allowlist(" , ") is None
    assert parse_allowlist("http://a/mcp,*") is None
    assert is_allowed("http://anything.example/mcp", None)


@pytest.mark.parametrize(
    ("entry", "url", "allowed"),
    [
        ("http://a:1/mcp", "http://a:1/mcp", True),
        ("http://a:1/mcp", "http://a:1/mcp?x=1", True),
        ("http://a:1", "http://a:1/sse", True),
        ("http://a:1", "http://a:10/sse", False),
        ("http://a:1/mc", "http://a:1/mcp", False),
        ("http://a:1/", "http://a:1/anything", True),
        ("a:1", "http://a:1/mcp", True),
        ("a:1", "http://a:2/mcp", False),
        ("a", "https://a:8443/mcp", True),
        ("a:443", "https://a/mcp", True),
        ("a", "http://b/mcp", False),
        ("a", "http://a.evil.example/mcp", False),
    ],
)
def test_allowlist_entries_match_prefixes_on_boundaries_and_hosts_with_ports(
    entry: str, url: str, allowed: bool
) -> None:
    assert is_allowed(url, parse_allowlist(entry)) is allowed


def test_a_malformed_allowlist_entry_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="MCP_ALLOWED_SERVERS"):
        parse_allowlist("a:b:c:notaport")


@pytest.mark.parametrize(
    ("url", "requested", "expected"),
    [
        ("http://h/sse", Transport.AUTO, Transport.SSE),
        ("http://h/v1/sse/", Transport.AUTO, Transport.SSE),
        ("http://h/mcp", Transport.AUTO, Transport.STREAMABLE_HTTP),
        ("http://h/other", Transport.AUTO, Transport.AUTO),
        ("http://h/sse", Transport.STREAMABLE_HTTP, Transport.STREAMABLE_HTTP),
        ("http://rule/x", Transport.AUTO, Transport.SSE),
    ],
)
def test_transport_comes_from_the_request_then_the_rules_then_the_path(
    url: str, requested: Transport, expected: Transport
) -> None:
    rules = parse_transport_rules("http://rule=sse")
    assert resolve_transport(url, requested, rules) is expected


def test_transport_names_accept_common_spellings() -> None:
    assert Transport.parse("streamableHttp") is Transport.STREAMABLE_HTTP
    assert Transport.parse("streamable-http") is Transport.STREAMABLE_HTTP
    assert Transport.parse("SSE") is Transport.SSE
    with pytest.raises(InvalidRequest):
        Transport.parse("websocket")


def test_settings_are_read_from_the_environment_once() -> None:
    settings = Settings.from_env(
        {
            "MCP_CONNECT_TIMEOUT": "2.5",
            "MCP_CALL_TIMEOUT": "7",
            "MCP_TOOLS_TTL": "0",
            "MCP_ALLOWED_SERVERS": "localhost:8000, http://mcp.internal/",
            "MCP_TRANSPORTS": "http://legacy.internal=sse",
        }
    )

    assert (settings.connect_timeout, settings.call_timeout, settings.tools_ttl) == (2.5, 7, 0)
    assert is_allowed("http://localhost:8000/mcp", settings.allowed_servers)
    assert is_allowed("http://mcp.internal/x/sse", settings.allowed_servers)
    assert not is_allowed("http://localhost:8001/mcp", settings.allowed_servers)
    assert settings.transport_rules[0].transport is Transport.SSE
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize("env", [{"MCP_CALL_TIMEOUT": "0"}, {"MCP_CONNECT_TIMEOUT": "x"}])
def test_invalid_settings_fail_at_startup(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_a_targets_repr_never_shows_header_values() -> None:
    target = ServerTarget("http://h/mcp", Transport.SSE, (("cookie", "secret-session"),))
    assert "secret-session" not in repr(target)
    assert "cookie" in repr(target)
