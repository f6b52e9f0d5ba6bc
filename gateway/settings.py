"""Gateway settings, read from the environment once at the entry point and passed down."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from gateway._env import env_number
from gateway.auth_failures import AuthFailureSettings
from gateway.errors import GatewayError
from gateway.routes.sse import StreamSettings
from gateway.security import SecuritySettings
from gateway.tasks import TaskSettings
from gateway.upstream import UpstreamSettings
from gateway.webhooks import WebhookSettings


class SettingsError(GatewayError, ValueError):
    """An environment variable has a value the gateway cannot use."""

    code = "invalid_settings"


def _num(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    try:
        return env_number(env, name, default, minimum=minimum)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _public_url(env: Mapping[str, str], host: str, port: int) -> str:
    """``PUBLIC_URL`` (an ``http(s)`` URL, no trailing ``/``), else ``http://HOST:PORT`` with a
    wildcard host (``0.0.0.0``, ``::``) read as loopback: right for a gateway run on this
    machine, wrong behind a proxy or in a container, where ``PUBLIC_URL`` must be set."""
    raw = env.get("PUBLIC_URL", "").strip().rstrip("/")
    if raw:
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"PUBLIC_URL must be an http(s) URL, got {raw!r}")
        if parts.query or parts.fragment:
            raise SettingsError(f"PUBLIC_URL must have no query or fragment, got {raw!r}")
        return raw
    host = host.strip("[]") if host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway reads from its environment (DESIGN §4 to §7).

    ``public_url`` is where users reach this gateway; the links to task files start with it.
    """

    redis_url: str | None = dataclasses.field(default=None, repr=False)
    redis_prefix: str = "agw"
    redis_cluster: bool = False
    redis_max_connections: int = 2048
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"  # from HOST and PORT unless PUBLIC_URL is set
    heartbeat_interval: float = 15.0
    sse_max_age: float = 3600.0
    sse_retry_ms: int = 3000
    send_timeout: float = 10.0
    max_running: int = 16
    max_queued: int = 1000
    task_timeout: float = 1800.0
    task_retry: int = 0
    shutdown_grace: float = 5.0
    result_ttl: int = 86_400
    log_max_bytes: int = 64 * 1024 * 1024  # per task's log; 0: unbounded (see store._retention)
    echo_token_delay_ms: float = 20.0
    lease_ttl: float = 10.0
    lease_renew_interval: float = 1.0
    sweep_interval: float = 2.0
    flush_interval_ms: float = 0.0
    flush_spacing_ms: float = 0.0
    max_body_bytes: int = 1_048_576
    cancel_wait: float = 10.0
    intake_wait: float = 1.0
    cors_origins: tuple[str, ...] = ()
    compat_heartbeat_interval: float = 10.0
    header_timeout: float = 10.0
    replica_id: str = dataclasses.field(default_factory=lambda: secrets.token_hex(4))
    upstream: UpstreamSettings = dataclasses.field(default_factory=UpstreamSettings)
    security: SecuritySettings = dataclasses.field(default_factory=SecuritySettings)
    auth_failures: AuthFailureSettings = dataclasses.field(default_factory=AuthFailureSettings)
    webhooks: WebhookSettings = dataclasses.field(default_factory=WebhookSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raises ``SettingsError``."""
        env = os.environ if environ is None else environ
        origins = tuple(o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip())
        host = env.get("HOST", "127.0.0.1")
        port = int(_num(env, "PORT", 8080, minimum=0))
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("REDIS_PREFIX", "agw"),
            redis_max_connections=int(_num(env, "REDIS_MAX_CONNECTIONS", 2048, minimum=1)),
            redis_cluster=env.get("REDIS_CLUSTER", "").lower() in {"1", "true", "yes"},
            host=host,
            port=port,
            public_url=_public_url(env, host, port),
            heartbeat_interval=_num(env, "HEARTBEAT_INTERVAL", 15.0, minimum=0.01),
            sse_max_age=_num(env, "SSE_MAX_AGE", 3600.0, minimum=0.1),
            sse_retry_ms=int(_num(env, "SSE_RETRY_MS", 3000)),
            send_timeout=_num(env, "SEND_TIMEOUT", 10.0, minimum=0.01),
            max_running=int(_num(env, "MAX_RUNNING", 16, minimum=1)),
            max_queued=int(_num(env, "MAX_QUEUED", 1000, minimum=0)),
            task_timeout=_num(env, "TASK_TIMEOUT", 1800.0, minimum=0.01),
            task_retry=int(_num(env, "TASK_RETRY", 0)),
            shutdown_grace=_num(env, "SHUTDOWN_GRACE", 5.0),
            result_ttl=int(_num(env, "RESULT_TTL", 86_400, minimum=1)),
            log_max_bytes=int(_num(env, "LOG_MAX_BYTES", 64 * 1024 * 1024)),
            echo_token_delay_ms=_num(env, "ECHO_TOKEN_DELAY_MS", 20.0),
            lease_ttl=_num(env, "LEASE_TTL", 10.0, minimum=0.05),
            lease_renew_interval=_num(env, "LEASE_RENEW_INTERVAL", 1.0, minimum=0.01),
            sweep_interval=_num(env, "SWEEP_INTERVAL", 2.0, minimum=0.01),
            flush_interval_ms=_num(env, "FLUSH_INTERVAL_MS", 0.0),
            flush_spacing_ms=_num(env, "FLUSH_SPACING_MS", 0.0),
            max_body_bytes=int(_num(env, "MAX_BODY_BYTES", 1_048_576, minimum=1)),
            cancel_wait=_num(env, "CANCEL_WAIT", 10.0, minimum=0.01),
            intake_wait=_num(env, "INTAKE_WAIT", 1.0, minimum=0.01),
            cors_origins=origins,
            compat_heartbeat_interval=_num(env, "COMPAT_HEARTBEAT_INTERVAL", 10.0, minimum=0.01),
            header_timeout=_num(env, "HEADER_TIMEOUT", 10.0),
            upstream=UpstreamSettings.from_env(env),
            security=SecuritySettings.from_env(env),
            auth_failures=AuthFailureSettings.from_env(env),
            webhooks=WebhookSettings.from_env(env),
        )

    def task_settings(self) -> TaskSettings:
        """The task manager's part of these settings."""
        return TaskSettings(
            replica_id=self.replica_id,
            max_running=self.max_running,
            max_queued=self.max_queued,
            task_timeout=self.task_timeout,
            task_retry=self.task_retry,
            shutdown_grace=self.shutdown_grace,
            lease_ttl=self.lease_ttl,
            lease_renew_interval=self.lease_renew_interval,
            sweep_interval=self.sweep_interval,
            cancel_wait=self.cancel_wait,
            intake_wait=self.intake_wait,
        )

    def stream_settings(self) -> StreamSettings:
        """The SSE routes' part of these settings."""
        return StreamSettings(
            heartbeat_interval=self.heartbeat_interval,
            sse_max_age=self.sse_max_age,
            sse_retry_ms=self.sse_retry_ms,
            send_timeout=self.send_timeout,
            cancel_wait=self.cancel_wait,
            compat_heartbeat_interval=self.compat_heartbeat_interval,
        )
