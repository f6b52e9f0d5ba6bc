"""Typed, immutable settings of the upstream clients, read from the environment once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway._env import env_number

__all__ = ["UpstreamSettings"]


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _number(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False
) -> float:
    return env_number(env, name, default, above_minimum=not allow_zero)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Where the LLM, the tool service and the MCP client live, and how long to wait for them.

    All durations are seconds. ``llm_idle_timeout`` bounds the time between two chunks of a
    stream (and the wait for the response headers); ``llm_total_timeout`` bounds a whole call,
    retries included. ``llm_ca_file`` is a PEM file of CA certificates trusted for an ``https``
    LLM instead of the system's. ``service_token`` is sent to the tool service and the MCP
    bridge (DESIGN §10). Neither the API key nor the token appears in ``repr``.
    """

    llm_base_url: str = "http://127.0.0.1:8000/v1"
    llm_api_key: str = field(default="", repr=False)
    llm_model: str = "stub"
    llm_connect_timeout: float = 5.0
    llm_idle_timeout: float = 60.0
    llm_total_timeout: float = 600.0
    llm_max_retries: int = 3
    llm_retry_backoff: float = 0.5
    llm_ca_file: str = ""
    tool_service_url: str = "http://127.0.0.1:1601"
    mcp_client_url: str = "http://127.0.0.1:8188"
    mcp_server_urls: tuple[str, ...] = ()
    tool_connect_timeout: float = 5.0
    tool_idle_timeout: float = 60.0
    tool_timeout: float = 1800.0
    service_token: str = field(default="", repr=False)

    @property
    def service_headers(self) -> dict[str, str]:
        """What a call to the tool service or the MCP bridge carries: the service token."""
        return {"authorization": f"Bearer {self.service_token}"} if self.service_token else {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UpstreamSettings:
        """Read the settings from ``environ`` (default ``os.environ``); bad values raise ValueError.

        Variables: ``LLM_BASE_URL``, ``LLM_API_KEY``, ``LLM_MODEL``, ``LLM_CONNECT_TIMEOUT``,
        ``LLM_IDLE_TIMEOUT``, ``LLM_TOTAL_TIMEOUT``, ``LLM_MAX_RETRIES``, ``LLM_RETRY_BACKOFF``,
        ``LLM_CA_FILE``, ``TOOL_SERVICE_URL``, ``MCP_CLIENT_URL``, ``MCP_SERVER_URLS`` (comma
        separated), ``TOOL_CONNECT_TIMEOUT``, ``TOOL_IDLE_TIMEOUT``, ``TOOL_TIMEOUT``,
        ``SERVICE_TOKEN``.
        """
        env = os.environ if environ is None else environ
        d = cls()
        servers = tuple(u.strip() for u in env.get("MCP_SERVER_URLS", "").split(",") if u.strip())
        return cls(
            llm_base_url=_text(env, "LLM_BASE_URL", d.llm_base_url).rstrip("/"),
            llm_api_key=env.get("LLM_API_KEY", "").strip(),
            llm_model=_text(env, "LLM_MODEL", d.llm_model),
            llm_connect_timeout=_number(env, "LLM_CONNECT_TIMEOUT", d.llm_connect_timeout),
            llm_idle_timeout=_number(env, "LLM_IDLE_TIMEOUT", d.llm_idle_timeout),
            llm_total_timeout=_number(env, "LLM_TOTAL_TIMEOUT", d.llm_total_timeout),
            llm_max_retries=int(
                _number(env, "LLM_MAX_RETRIES", d.llm_max_retries, allow_zero=True)
            ),
            llm_retry_backoff=_number(
                env, "LLM_RETRY_BACKOFF", d.llm_retry_backoff, allow_zero=True
            ),
            llm_ca_file=env.get("LLM_CA_FILE", "").strip(),
            tool_service_url=_text(env, "TOOL_SERVICE_URL", d.tool_service_url).rstrip("/"),
            mcp_client_url=_text(env, "MCP_CLIENT_URL", d.mcp_client_url).rstrip("/"),
            mcp_server_urls=servers,
            tool_connect_timeout=_number(env, "TOOL_CONNECT_TIMEOUT", d.tool_connect_timeout),
            tool_idle_timeout=_number(env, "TOOL_IDLE_TIMEOUT", d.tool_idle_timeout),
            tool_timeout=_number(env, "TOOL_TIMEOUT", d.tool_timeout),
            service_token=env.get("SERVICE_TOKEN", "").strip(),
        )
