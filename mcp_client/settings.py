"""The bridge's settings: typed, immutable, read from the environment once at startup.

=========================  =======  ==================================================
variable                   default  meaning
=========================  =======  ==================================================
``MCP_CONNECT_TIMEOUT``    10       seconds to open a session (transport + initialize)
``MCP_CALL_TIMEOUT``       60       seconds per call when there is no ``Timeout`` header
``MCP_MAX_CALL_TIMEOUT``   600      upper bound for a ``Timeout`` header
``MCP_TOOLS_TTL``          5        seconds a server's tool list is cached (0: off)
``MCP_MAX_SESSIONS``       64       pooled sessions; beyond it idle ones close, LRU
``MCP_SSE_READ_TIMEOUT``   300      silence after which a server's stream is dead
``MCP_ALLOWED_SERVERS``    unset    allowlist (:mod:`mcp_client.target`); listed servers
                                    may be private; unset/``*``: any server on a global
                                    address (loopback, private, link-local ... refused)
``MCP_TRANSPORTS``         unset    ``url_prefix=sse|streamable_http``, comma-separated
``SERVICE_TOKEN``          unset    set: every route but ``/health`` needs
                                    ``Authorization: Bearer <token>`` (the gateway's)
=========================  =======  ==================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from mcp_client.target import AllowRule, TransportRule, parse_allowlist, parse_transport_rules

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """Everything the bridge reads from its environment; build it with :meth:`from_env`."""

    connect_timeout: float = 10.0
    call_timeout: float = 60.0
    max_call_timeout: float = 600.0
    tools_ttl: float = 5.0
    max_sessions: int = 64
    sse_read_timeout: float = 300.0
    allowed_servers: tuple[AllowRule, ...] | None = None
    transport_rules: tuple[TransportRule, ...] = ()
    service_token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "call_timeout", "max_call_timeout", "sse_read_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.tools_ttl < 0:
            raise ValueError("tools_ttl must not be negative")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``MCP_*`` variables (see the module docstring); unset ones keep defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            connect_timeout=_float(env, "MCP_CONNECT_TIMEOUT", defaults.connect_timeout),
            call_timeout=_float(env, "MCP_CALL_TIMEOUT", defaults.call_timeout),
            max_call_timeout=_float(env, "MCP_MAX_CALL_TIMEOUT", defaults.max_call_timeout),
            tools_ttl=_float(env, "MCP_TOOLS_TTL", defaults.tools_ttl),
            max_sessions=int(_float(env, "MCP_MAX_SESSIONS", defaults.max_sessions)),
            sse_read_timeout=_float(env, "MCP_SSE_READ_TIMEOUT", defaults.sse_read_timeout),
            allowed_servers=parse_allowlist(env.get("MCP_ALLOWED_SERVERS")),
            transport_rules=parse_transport_rules(env.get("MCP_TRANSPORTS")),
            service_token=env.get("SERVICE_TOKEN", "").strip(),
        )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return float(default)
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
