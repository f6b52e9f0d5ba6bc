"""The error tree of the tool service.

Every error a client can see is a :class:`ToolServiceError`; it carries a stable ``code``, a
human-readable ``message`` and the HTTP ``status_code`` used when the error is answered as JSON
(``{"error": {"code", "message"}}``) instead of as an SSE error frame::

    ToolServiceError                 500 internal
    ├── InvalidRequest               400 invalid_request
    │   └── PayloadTooLarge          413 payload_too_large
    ├── NotFound                     404 not_found
    ├── UpstreamError                502 upstream_error  (LLM or search engine failed)
    │   └── UpstreamTimeout          504 timeout
    └── SandboxError                 500 sandbox_error   (the sandbox itself failed)
        ├── SandboxUnavailable       503 sandbox_unavailable (bubblewrap cannot run here)
        └── CodeTimeout              504 timeout         (the code ran past its wall-clock limit)

Third-party errors (httpx, OSError, pydantic) are converted at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CodeTimeout",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "SandboxError",
    "SandboxUnavailable",
    "ToolServiceError",
    "UpstreamError",
    "UpstreamTimeout",
]


class ToolServiceError(Exception):
    """Root of all errors the tool service reports to its clients."""

    code = "internal"
    status_code = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The ``{"code", "message"}`` body of the error."""
        return {"code": self.code, "message": self.message}


class InvalidRequest(ToolServiceError):
    """The request is malformed: bad JSON, a missing field, a forbidden file name."""

    code = "invalid_request"
    status_code = 400


class PayloadTooLarge(InvalidRequest):
    """A body or a file is larger than the configured limit."""

    code = "payload_too_large"
    status_code = 413


class NotFound(ToolServiceError):
    """The requested file or request folder does not exist."""

    code = "not_found"
    status_code = 404


class UpstreamError(ToolServiceError):
    """The LLM or a search engine failed or answered something unusable."""

    code = "upstream_error"
    status_code = 502


class UpstreamTimeout(UpstreamError):
    """The LLM or a search engine did not answer in time."""

    code = "timeout"
    status_code = 504


class SandboxError(ToolServiceError):
    """The code sandbox could not be set up or torn down."""

    code = "sandbox_error"
    status_code = 500


class SandboxUnavailable(SandboxError):
    """The sandbox cannot run on this host, so code is not executed at all."""

    code = "sandbox_unavailable"
    status_code = 503


class CodeTimeout(SandboxError):
    """The sandboxed code ran past its wall-clock limit and was killed."""

    code = "timeout"
    status_code = 504
