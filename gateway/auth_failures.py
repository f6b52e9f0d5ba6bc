"""A lockout of client addresses that keep presenting wrong API keys (guessing keys).

``install_auth_failure_limit(app, settings)`` puts :class:`FailedAuthMiddleware` just outside
the security middleware (``gateway.security``), which answers 401 to a wrong or missing key.
Per client address:

- a request that *presented* a key (an ``Authorization`` header) and was answered 401 counts
  as a failure; a request without any key does not (a browser's ``EventSource`` that cannot send
  one is a misconfiguration, not a guess);
- ``limit`` failures within ``window`` seconds lock the address out for ``window`` seconds:
  every request from it, with any key, the right ones included, gets
  ``429 {"error": {"code": "too_many_failed_auth"}}`` with ``Retry-After``. Letting a right key
  through would let whoever holds one key keep guessing others; this is the usual lockout.
  Open paths (health, metrics, the OpenAPI document) stay open.

The address is the ASGI ``client`` (behind a reverse proxy, run uvicorn with
``--forwarded-allow-ips`` so that it is the caller's, not the proxy's). Counts live in this
process (with N replicas an address gets up to N times the attempts) and are bounded: at most
``max_clients`` addresses are remembered, the least recently failing forgotten first, and
entries past their window are dropped as they are met.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway._env import env_int, env_number
from gateway.errors import error_response
from gateway.security import OPEN_PATHS

__all__ = [
    "AuthFailureSettings",
    "FailedAuthLimiter",
    "FailedAuthMiddleware",
    "install_auth_failure_limit",
]


DEFAULT_LIMIT = 20
DEFAULT_WINDOW = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class AuthFailureSettings:
    """``AUTH_FAILURE_LIMIT`` failed authentications per address per ``AUTH_FAILURE_WINDOW``
    seconds (0 turns the lockout off); ``max_clients`` addresses remembered at most."""

    limit: int = DEFAULT_LIMIT
    window: float = DEFAULT_WINDOW
    max_clients: int = 10_000
    open_paths: frozenset[str] = OPEN_PATHS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthFailureSettings:
        """Read the variables above (default ``os.environ``); bad values raise ``ValueError``."""
        env = os.environ if environ is None else environ
        return cls(
            limit=env_int(env, "AUTH_FAILURE_LIMIT", DEFAULT_LIMIT),
            window=env_number(env, "AUTH_FAILURE_WINDOW", DEFAULT_WINDOW, above_minimum=True),
        )


@dataclasses.dataclass(slots=True)
class _Record:
    since: float  # start of the counting window
    failures: int = 0
    locked_until: float = 0.0


class FailedAuthLimiter:
    """Failed authentications per address, and which addresses are locked out."""

    def __init__(
        self, settings: AuthFailureSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._records: collections.OrderedDict[str, _Record] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def locked_for(self, address: str) -> float:
        """Seconds ``address`` stays locked out (0.0: it is not)."""
        record = self._records.get(address)
        if record is None:
            return 0.0
        now = self._clock()
        if record.locked_until > now:
            return record.locked_until - now
        if now - record.since >= self.settings.window:
            del self._records[address]  # its window is over: forget it
        return 0.0

    def failed(self, address: str) -> None:
        """Count a failed authentication from ``address`` (it may lock it out)."""
        now = self._clock()
        window = self.settings.window
        record = self._records.pop(address, None)
        if record is None or now - record.since >= window:
            record = _Record(since=now)
        record.failures += 1
        if record.failures >= self.settings.limit:
            record.locked_until = now + window
        self._records[address] = record  # the most recent failure last
        while len(self._records) > self.settings.max_clients:
            self._records.popitem(last=False)


class FailedAuthMiddleware:
    """Refuses locked-out addresses and counts 401 answers to requests that carried a key."""

    def __init__(self, app: ASGIApp, limiter: FailedAuthLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter
        if (
            scope["type"] != "http"
            or limiter.settings.limit <= 0
            or scope["path"] in limiter.settings.open_paths
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        wait = limiter.locked_for(address)
        if wait > 0:
            retry = {"Retry-After": str(max(1, math.ceil(wait)))}
            message = "too many failed authentications from this address; retry later"
            refused = error_response(429, "too_many_failed_auth", message, retry)
            await refused(scope, receive, send)
            return
        if not any(name == b"authorization" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                limiter.failed(address)
            await send(message)

        await self.app(scope, receive, counting_send)


def install_auth_failure_limit(app: Starlette, settings: AuthFailureSettings) -> None:
    """Add :class:`FailedAuthMiddleware` to ``app`` before it starts; call it before
    ``install_security`` so that it sits outside the middleware answering 401."""
    if app.middleware_stack is not None:
        raise RuntimeError("install_auth_failure_limit must run before the app starts")
    limiter = FailedAuthLimiter(settings)
    app.user_middleware.append(Middleware(FailedAuthMiddleware, limiter=limiter))
