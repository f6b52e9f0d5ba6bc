"""API keys, task ownership, a per-client rate limit and request size limits, as one middleware.

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
   (:func:`key_name`); tasks belong to the name that created them: another name gets 404 on
   ``/api/tasks/{id}/...``; listings are the store's, asked for that name's tasks only
   (``list_tasks(owned_by=…)`` in the route), so a page is never short. Keys that share a name share
   their tasks (key rotation).
5. The body is counted as it streams (chunked bodies included): over the limit → 413.

Ownership is decided where a task is created, not here: the submitting route scopes its
``Idempotency-Key`` or compat ``requestId`` by the key name (:func:`scoped_key`), so another
name can never reach an existing task through it, and records the owner only of a task that
submission created (:func:`record_owner`), so an owner never changes. Owners live in
:class:`TaskNotes`, small per-task side records kept by the store and expiring with the task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway._env import env_number
from gateway.errors import error_response
from gateway.protocol import parse_decimal
from gateway.store import StreamStore

__all__ = [
    "SecurityMiddleware",
    "SecuritySettings",
    "TaskNotes",
    "install_security",
    "key_name",
    "record_owner",
    "scoped_key",
    "task_notes",
]

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/agent-card.json"}
)
"""Paths served without a key: health, metrics, the OpenAPI document and the A2A agent card
(a client reads the card to learn that it needs a key)."""
_TASK_PATH = re.compile(r"^/api/tasks/([^/]+)(?:/.*)?$")  # the task and all below it
_NOT_FOUND = "no task with that id (unknown or expired)"


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


# -- per-task side records ---------------------------------------------------------------------
class TaskNotes:
    """Small string records per task and kind (``owner``, ``webhook``), kept by the store
    beside the task (so they expire with it and follow it across replicas)."""

    def __init__(self, store: StreamStore, ttl: float) -> None:
        self.ttl = max(1, int(ttl))
        self._store = store

    async def set(self, task_id: str, kind: str, fields: Mapping[str, str]) -> None:
        """Merge ``fields`` into the record and restart its expiry."""
        await self._store.annotate(task_id, kind, fields, self.ttl)

    async def get(self, task_id: str, kind: str) -> dict[str, str]:
        """The record (empty when there is none)."""
        return (await self.get_many([task_id], kind))[0]

    async def get_many(self, task_ids: Sequence[str], kind: str) -> list[dict[str, str]]:
        """The records of ``task_ids``, in order."""
        return await self._store.annotations(task_ids, kind)


def task_notes(app: Starlette) -> TaskNotes:
    """The app's :class:`TaskNotes` (made on first use, over ``app.state.store``)."""
    notes: TaskNotes | None = getattr(app.state, "task_notes", None)
    if notes is None:
        settings = getattr(app.state, "settings", None)
        ttl = 86_400 * 2.0
        if settings is not None:
            ttl = settings.result_ttl + settings.task_timeout + 3600
        notes = app.state.task_notes = TaskNotes(app.state.store, ttl)
    return notes


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


async def record_owner(request: Request, task_id: str, created: bool) -> None:
    """Make the caller's key name the owner of ``task_id``, which it just submitted.

    Nothing happens with auth off. A created task gets its owner here, before its id reaches
    the client. A submission that found an existing task (``created`` false) reached it
    through a key scoped to this same name, so it only fills an owner that is missing (the
    process died between the create and this write) and never changes one.
    """
    name = key_name(request)
    if name is None:
        return
    notes = task_notes(request.app)
    if not created and (await notes.get(task_id, "owner")).get("name"):
        return
    await notes.set(task_id, "owner", {"name": name})


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
            refusal = await _refuse_others_task(app, path, name)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
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


async def _refuse_others_task(app: Starlette, path: str, name: str) -> Response | None:
    """A 404 for a request to one task (``/api/tasks/{id}/...``) that ``name`` does not own.

    Listings are scoped by the route, which asks the store for ``name``'s tasks only;
    submissions by :func:`scoped_key` and :func:`record_owner`, used by the routes.
    """
    match = _TASK_PATH.match(path)
    if match is None:
        return None
    owner = await task_notes(app).get(match.group(1), "owner")
    if owner.get("name") != name:  # the same answer as for an unknown id: no oracle
        return error_response(404, "not_found", _NOT_FOUND)
    return None


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
