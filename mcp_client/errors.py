"""The errors of the MCP bridge, as one small tree.

Every error carries a stable ``code`` (for ``{"error": {"code", "message"}}``) and the HTTP
``status_code`` the bridge answers with::

    McpClientError            500 internal
    ├── InvalidRequest        400 invalid_request       bad body, header or URL
    ├── ServerNotAllowed      403 server_not_allowed    server_url outside the allowlist
    │   └── AddressNotAllowed 403 address_not_allowed   a loopback/private/... target, unlisted
    ├── UpstreamError         502 upstream_error        the server answered an MCP error
    ├── UpstreamTimeout       504 timeout               connect or call time limit hit
    └── UpstreamUnavailable   502 upstream_unavailable  cannot connect to the server
        ├── TransportRejected 502 transport_rejected    it answered, but not as that transport
        └── ConnectionLost    502 connection_lost       a pooled session broke mid-use

Third-party errors (httpx2, anyio, the MCP SDK) are converted at the boundary with
``raise ... from exc`` so the trace stays in the logs and clients see only the code and message.
"""

from __future__ import annotations

__all__ = [
    "AddressNotAllowed",
    "ConnectionLost",
    "InvalidRequest",
    "McpClientError",
    "ServerNotAllowed",
    "TransportRejected",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "describe_exception",
    "first_leaf",
]


class McpClientError(Exception):
    """Root of the bridge's errors: a client-safe ``message`` plus ``code`` and ``status_code``."""

    code = "internal"
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(McpClientError):
    """The request body, a header or the ``server_url`` is malformed."""

    code = "invalid_request"
    status_code = 400


class ServerNotAllowed(McpClientError):
    """The ``server_url`` is not covered by ``MCP_ALLOWED_SERVERS``."""

    code = "server_not_allowed"
    status_code = 403


class AddressNotAllowed(ServerNotAllowed):
    """The ``server_url`` host is (or resolves to) a loopback, private, link-local or other
    non-global address, and ``MCP_ALLOWED_SERVERS`` does not list the server."""

    code = "address_not_allowed"


class UpstreamError(McpClientError):
    """The MCP server answered with a JSON-RPC error (unknown tool, bad params, ...)."""

    code = "upstream_error"
    status_code = 502

    def __init__(self, message: str, *, rpc_code: int | None = None) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code


class UpstreamTimeout(McpClientError):
    """Connecting to the server, or one call on it, took longer than its time limit."""

    code = "timeout"
    status_code = 504


class UpstreamUnavailable(McpClientError):
    """No MCP session could be established with the server."""

    code = "upstream_unavailable"
    status_code = 502


class TransportRejected(UpstreamUnavailable):
    """The server answered over HTTP but refused the transport (e.g. 404/405 on a POST).

    This is the signal that makes automatic detection fall back from streamable HTTP to SSE.
    """

    code = "transport_rejected"


class ConnectionLost(UpstreamUnavailable):
    """A pooled session broke while in use; the pool retries once on a fresh session."""

    code = "connection_lost"


def first_leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside ``exc`` (``exc`` itself when it is not a group).

    Transport failures inside the SDK surface as nested ``ExceptionGroup``s whose own message
    ("unhandled errors in a TaskGroup") says nothing useful to a client.
    """
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_exception(exc: BaseException) -> str:
    """A one-line description of ``exc``, unwrapping exception groups to their first leaf."""
    exc = first_leaf(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
