"""The service token: with ``SERVICE_TOKEN`` set, only the gateway may call the tool service.

DESIGN §10: the tool service is internal. :class:`RequireServiceToken` answers every request but
the health check with ``401 {"error": {"code": "unauthorized", ...}}`` unless it carries
``Authorization: Bearer <SERVICE_TOKEN>``; the comparison takes constant time.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["RequireServiceToken"]


class RequireServiceToken:
    """ASGI middleware: refuse HTTP requests without the service token (``open_paths`` pass)."""

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str]) -> None:
        self.app = app
        self._expected = hashlib.sha256(token.encode()).digest()
        self._open_paths = open_paths

    def __repr__(self) -> str:
        return "RequireServiceToken(token=***)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open_paths:
            await self.app(scope, receive, send)
            return
        scheme, _, given = Headers(scope=scope).get("authorization", "").strip().partition(" ")
        # Hashes of equal length: the comparison reveals neither the token nor its length.
        digest = hashlib.sha256(given.strip().encode("latin-1")).digest()
        if scheme.lower() == "bearer" and hmac.compare_digest(digest, self._expected):
            await self.app(scope, receive, send)
            return
        message = "a valid service token is required (Authorization: Bearer <SERVICE_TOKEN>)"
        body = orjson.dumps({"error": {"code": "unauthorized", "message": message}})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"www-authenticate", b'Bearer realm="tool_service"'),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
