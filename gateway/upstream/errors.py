"""The errors of the upstream clients: one small tree, converted from httpx at the boundary.

```
UpstreamError(code, message, upstream_status=None)    root; ``code`` is a task error code
├── UpstreamTimeout          code "timeout"; ``phase`` is "connect", "idle", "write" or "total"
├── UpstreamConnectError     could not reach the upstream (refused, DNS, TLS, pool)
├── UpstreamHTTPError        a non-2xx status; ``upstream_status``, ``retry_after`` (seconds, None)
├── UpstreamProtocolError    the stream broke or was malformed (cut, no ``[DONE]``, bad JSON)
└── UpstreamRemoteError      the upstream reported an error in-band: a tool ``error`` frame,
                             an MCP ``code`` other than 200, an LLM error chunk; ``detail``
```

Every code other than ``timeout`` is ``upstream_error``, so an agent can copy ``exc.code`` into a
task's ``error.code`` (DESIGN §4) and ``str(exc)`` into its message.

The root is a :class:`gateway.errors.GatewayError` (the gateway's one error root): one that reaches
a client unhandled answers 502 (504 for a timeout). ``upstream_status`` is the status the
upstream answered, if any; ``status_code`` stays the gateway's own answer, as for every
``GatewayError``.
"""

from __future__ import annotations

from typing import Any

import httpx

from gateway.errors import GatewayError

__all__ = [
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamRemoteError",
    "UpstreamTimeout",
    "from_httpx",
]


class UpstreamError(GatewayError):
    """Root of every error an upstream client raises."""

    status_code = 502

    def __init__(self, code: str, message: str, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.upstream_status = upstream_status

    def to_dict(self) -> dict[str, str]:
        """The ``{"code", "message"}`` pair a task's ``error`` payload carries."""
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class UpstreamTimeout(UpstreamError):
    """A connect, idle-read, write or total time limit was exceeded."""

    status_code = 504

    def __init__(self, phase: str, message: str) -> None:
        super().__init__("timeout", message)
        self.phase = phase


class UpstreamConnectError(UpstreamError):
    """The upstream could not be reached."""

    def __init__(self, message: str) -> None:
        super().__init__("upstream_error", message)


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status."""

    def __init__(
        self, message: str, upstream_status: int, retry_after: float | None = None
    ) -> None:
        super().__init__("upstream_error", message, upstream_status)
        self.retry_after = retry_after


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer broke off or did not follow the expected wire format."""

    def __init__(self, message: str) -> None:
        super().__init__("upstream_error", message)


class UpstreamRemoteError(UpstreamError):
    """The upstream reported an error in its own payload; ``detail`` keeps what it sent."""

    def __init__(
        self, message: str, *, upstream_status: int | None = None, detail: Any = None
    ) -> None:
        super().__init__("upstream_error", message, upstream_status)
        self.detail = detail


def from_httpx(exc: httpx.HTTPError, what: str) -> UpstreamError:
    """Convert an httpx error raised while talking to ``what`` into an :class:`UpstreamError`.

    Use as ``raise from_httpx(exc, "LLM") from exc`` so the original stays the ``__cause__``.
    """
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return UpstreamTimeout("connect", f"{what}: connect timed out ({detail})")
    if isinstance(exc, httpx.ReadTimeout):
        return UpstreamTimeout("idle", f"{what}: no data within the idle time limit")
    if isinstance(exc, httpx.WriteTimeout):
        return UpstreamTimeout("write", f"{what}: sending the request timed out")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamConnectError(f"{what}: cannot connect ({detail})")
    if isinstance(exc, httpx.HTTPStatusError):
        return UpstreamHTTPError(
            f"{what}: HTTP {exc.response.status_code}", exc.response.status_code
        )
    return UpstreamProtocolError(f"{what}: connection broke ({detail})")
