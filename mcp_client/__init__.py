"""MCP client bridge (port 8188): JoyAgent's ``/v1/tool/*`` API over pooled MCP sessions.

A separate app built on the official ``mcp`` SDK; it imports nothing from ``gateway``.
Servers are reached over streamable HTTP or legacy SSE (configured or detected), sessions are
pooled per server and re-established when they break, and ``MCP_ALLOWED_SERVERS`` restricts
where the bridge may connect; without it, only global addresses are reached
(:mod:`mcp_client.addresses`).
"""

from mcp_client.app import create_app
from mcp_client.errors import (
    AddressNotAllowed,
    ConnectionLost,
    InvalidRequest,
    McpClientError,
    ServerNotAllowed,
    TransportRejected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from mcp_client.pool import SessionPool
from mcp_client.settings import Settings
from mcp_client.target import ServerTarget, Transport

__all__ = [
    "AddressNotAllowed",
    "ConnectionLost",
    "InvalidRequest",
    "McpClientError",
    "ServerNotAllowed",
    "ServerTarget",
    "SessionPool",
    "Settings",
    "Transport",
    "TransportRejected",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "create_app",
]
