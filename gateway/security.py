"""API keys, a per-client rate limit and request size limits, as one middleware.

``install_security(app, settings)`` adds :class:`SecurityMiddleware` inside the CORS middleware
(so CORS preflights never need a key and a 401 still carries CORS headers). Per request:

1. URL over ``max_url_bytes`` → 414; headers over ``max_header_bytes`` → 431; a declared
   ``Content-Length`` over the body limit → 413 before anything is read.
2. Unless the path is open (health, metrics, the OpenAPI document): with ``API_KEYS`` set, an
   ``Authorization: Bearer <key>`` of a known key, else 401 with ``WWW-Authenticate: Bearer``.
3. A token bucket per key name (per client IP when auth is off): 429 ``rate_limited`` with
   ``Retry-After``. The buckets are the store's (``store.limits``): in Redis with ``RedisStore``,
   one script call per request, so N replicas together grant the configured rate.
4. With auth on, the key's name goes to the route as ``request.state.api_key_name``
   (:func:`key_name`). Keys that share a name share their tasks (key rotation).
5. The body is counted as it streams (chunked bodies included): over the limit → 413.

Which tasks a name may see is not decided here but by the task's record: a task's ``tenant``
(the name that created it) is written with it by ``TaskManager.submit`` and never changes;
the routes read a task through ``store.get_for(id, name)`` and list through
``store.list_tasks(tenant=name)``, so another name's task is a 404, as an unknown one, and a
listing page is never short. A submission's ``Idempotency-Key`` or compat ``requestId`` is
scoped by the name (:func:`scoped_key`), so another name never reaches a task through it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway._env import env_number
from gateway.errors import error_response
from gateway.protocol import parse_decimal

__all__ = [
    "SecurityMiddleware",
    "SecuritySettings",
    "install_security",
    "key_name",
    "scoped_key",
]

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/agent-card.json"}
)
"""Paths served without a key: health, metrics, the OpenAPI document and the A2A agent card
(a client reads the card to learn that it needs a key)."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    return env_number(env, name, default)


def parse_api_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """``name:key`` or plain ``key`` entries, comma separated → ``(sha256(key), name)`` pairs.

    A plain key is named ``key-<first 8 hex digits of its hash>`` (never the key itself).
    """
    pairs = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, colon, key = entry.partition(":")
        if not colon:
            name, key = "", name
        name, key = name.strip(), key.strip()
        if not key or (colon and not name):
            raise ValueError("API_KEYS entries must be 'name:key' or 'key', with neither empty")
        pairs.append((_digest(key), name or f"key-{_digest(key)[:8]}"))
    return tuple(pairs)


@dataclasses.dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Auth, rate limit and size limits (``API_KEYS``, ``RATE_LIMIT_RPS``, …).

    ``api_keys`` holds ``(sha256(key), name)`` pairs, so no key is ever kept, shown or logged.
    ``rate_limit_rps`` 0 turns the limit off; ``rate_limit_burst`` 0 means ``max(1, rps)``.
    ``max_body_bytes`` ``None`` means the gateway's own ``MAX_BODY_BYTES``.
    """

    api_keys: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 0
    max_body_bytes: int | None = None
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    open_paths: frozenset[str] = OPEN_PATHS

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def burst(self) -> int:
        return self.rate_limit_burst or max(1, math.ceil(self.rate_limit_rps))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecuritySettings:
        """Read ``API_KEYS``, ``RATE_LIMIT_RPS``, ``RATE_LIMIT_BURST``, ``MAX_REQUEST_BYTES``,
        ``MAX_URL_BYTES``, ``MAX_HEADER_BYTES`` from ``environ`` (default ``os.environ``); bad
        values raise ``ValueError``."""
        env = os.environ if environ is None else environ
        max_body = _positive(env, "MAX_REQUEST_BYTES", 0)
        return cls(
            api_keys=parse_api_keys(env.get("API_KEYS", "")),
            rate_limit_rps=_positive(env, "RATE_LIMIT_RPS", 0.0),
            rate_limit_burst=int(_positive(env, "RATE_LIMIT_BURST", 0)),
            max_body_bytes=int(max_body) or None,
            max_url_bytes=int(_positive(env, "MAX_URL_BYTES", 8 * 1024)) or 8 * 1024,
            max_header_bytes=int(_positive(env, "MAX_HEADER_BYTES", 32 * 1024)) or 32 * 1024,
        )

    def name_of(self, key: str) -> str | None:
        """The name of ``key``, or ``None`` if it is not one of ours (compared by hash)."""
        digest = _digest(key)
        for known, name in self.api_keys:
            if known == digest:
                return name
        return None


# -- ownership ---------------------------------------------------------------------------------
_KEY_NAME = "api_key_name"


def key_name(request: Request) -> str | None:
    """The name of the API key that authenticated ``request`` (``None`` with auth off)."""
    name: str | None = getattr(request.state, _KEY_NAME, None)
    return name


def scoped_key(name: str, key: str) -> str:
    """The store's form of an idempotency key (or compat ``requestId``) sent by key ``name``.

    A hash of the name and the key: the same key sent by two names names two tasks, and
    neither the key nor the name appears in the store.
    """
    return hashlib.sha256(name.encode() + b"\0" + key.encode()).hexdigest()


# -- the middleware ----------------------------------------------------------------------------
class _BodyTooLarge(Exception):
    """The streamed body passed the limit (raised from ``receive`` into the app)."""


class SecurityMiddleware:
    """The ASGI middleware of this module; its configuration is ``app.state.security``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app: Starlette = scope["app"]
        settings: SecuritySettings = app.state.security
        path: str = scope["path"]
        headers = Headers(scope=scope)
        limit = settings.max_body_bytes or app.state.settings.max_body_bytes
        refusal = _check_sizes(scope, headers, settings, limit)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        name: str | None = None
        if path not in settings.open_paths:
            if settings.auth_enabled:
                name, refusal = _authenticate(headers, settings)
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
            if settings.rate_limit_rps > 0:
                client = scope.get("client")
                wait = await app.state.store.limits.take(
                    name or (client[0] if client else "unknown"),
                    settings.rate_limit_rps,
                    settings.burst,
                )
                if wait > 0:
                    retry = {"Retry-After": str(max(1, math.ceil(wait)))}
                    refused = error_response(429, "rate_limited", "too many requests", retry)
                    await refused(scope, receive, send)
                    return
        if name is not None:
            scope = {**scope, "state": {**scope.get("state", {}), _KEY_NAME: name}}
        if "content-length" not in headers and "transfer-encoding" not in headers:
            # No body (a GET, an SSE stream): nothing to limit, no wrappers on every frame.
            await self.app(scope, receive, send)
            return
        await self._call_limited(scope, receive, send, limit)

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                logger.info("request body over %d bytes after the response started", limit)
                return
            refused = error_response(413, "body_too_large", f"the body exceeds {limit} bytes")
            await refused(scope, receive, send)


def _check_sizes(
    scope: Scope, headers: Headers, settings: SecuritySettings, limit: int
) -> Response | None:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    if len(raw_path) + len(scope.get("query_string", b"")) > settings.max_url_bytes:
        return error_response(
            414, "uri_too_long", f"the URL exceeds {settings.max_url_bytes} bytes"
        )
    if sum(len(k) + len(v) for k, v in scope["headers"]) > settings.max_header_bytes:
        message = f"the headers exceed {settings.max_header_bytes} bytes"
        return error_response(431, "headers_too_large", message)
    declared = parse_decimal(headers.get("content-length"))
    if declared is not None and declared > limit:
        return error_response(413, "body_too_large", f"the body exceeds {limit} bytes")
    return None


def _authenticate(
    headers: Headers, settings: SecuritySettings
) -> tuple[str | None, Response | None]:
    scheme, _, key = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        challenge = {"WWW-Authenticate": 'Bearer realm="agent-gateway"'}
        return None, error_response(401, "unauthorized", "an API key is required", challenge)
    name = settings.name_of(key.strip())
    if name is None:
        challenge = {"WWW-Authenticate": 'Bearer realm="agent-gateway", error="invalid_token"'}
        return None, error_response(401, "unauthorized", "the API key is not valid", challenge)
    return name, None


# -- installation ------------------------------------------------------------------------------
def install_security(app: Starlette, settings: SecuritySettings | None = None) -> None:
    """Put :class:`SecurityMiddleware` on ``app`` (before it starts), configured by ``settings``.

    Idempotent: a second call only replaces the configuration. The rate limit's buckets are
    ``app.state.store``'s. Install it before ``install_webhooks`` so unauthenticated bodies are
    never buffered.
    """
    app.state.security = settings or SecuritySettings()
    if not any(m.cls is SecurityMiddleware for m in app.user_middleware):
        if app.middleware_stack is not None:
            raise RuntimeError("install_security must run before the app starts")
        app.user_middleware.append(Middleware(SecurityMiddleware))
