"""UpstreamSettings from the environment, and the error tree's structured fields."""

from __future__ import annotations

import httpx
import pytest

from gateway.errors import GatewayError
from gateway.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamSettings,
    UpstreamTimeout,
)
from gateway.upstream._http import parse_retry_after
from gateway.upstream.errors import from_httpx


def test_defaults_point_at_the_local_services() -> None:
    settings = UpstreamSettings.from_env({})
    assert settings.llm_base_url == "http://127.0.0.1:8000/v1"
    assert settings.llm_model == "stub"
    assert settings.tool_service_url == "http://127.0.0.1:1601"
    assert settings.mcp_client_url == "http://127.0.0.1:8188"
    assert settings.mcp_server_urls == ()


def test_values_are_read_from_the_environment() -> None:
    settings = UpstreamSettings.from_env(
        {
            "LLM_BASE_URL": "https://api.example/v1/",
            "LLM_API_KEY": "sk-123",
            "LLM_MODEL": "gpt-x",
            "LLM_IDLE_TIMEOUT": "2.5",
            "LLM_MAX_RETRIES": "0",
            "MCP_SERVER_URLS": " http://a/sse, ,http://b/mcp ",
            "TOOL_TIMEOUT": "30",
            "LLM_CA_FILE": " /etc/agw/ca.pem ",
        }
    )
    assert settings.llm_base_url == "https://api.example/v1"
    assert settings.llm_api_key == "sk-123"
    assert settings.llm_model == "gpt-x"
    assert settings.llm_idle_timeout == 2.5
    assert settings.llm_max_retries == 0
    assert settings.mcp_server_urls == ("http://a/sse", "http://b/mcp")
    assert settings.tool_timeout == 30
    assert settings.llm_ca_file == "/etc/agw/ca.pem"


def test_the_api_key_never_appears_in_the_repr() -> None:
    settings = UpstreamSettings.from_env({"LLM_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings)


def test_the_service_token_is_sent_as_a_bearer_and_never_shown() -> None:
    settings = UpstreamSettings.from_env({"SERVICE_TOKEN": " tok-secret "})
    assert settings.service_headers == {"authorization": "Bearer tok-secret"}
    assert "tok-secret" not in repr(settings)
    assert UpstreamSettings.from_env({}).service_headers == {}


@pytest.mark.parametrize("value", ["soon", "-1", "0"])
def test_a_bad_timeout_is_refused_with_the_variable_name(value: str) -> None:
    with pytest.raises(ValueError, match="LLM_TOTAL_TIMEOUT"):
        UpstreamSettings.from_env({"LLM_TOTAL_TIMEOUT": value})


def test_settings_are_immutable() -> None:
    settings = UpstreamSettings()
    with pytest.raises(AttributeError):
        settings.llm_model = "other"  # type: ignore[misc]


def test_httpx_errors_convert_to_the_upstream_tree() -> None:
    request = httpx.Request("GET", "http://x")
    connect = from_httpx(httpx.ConnectError("refused", request=request), "LLM")
    idle = from_httpx(httpx.ReadTimeout("slow", request=request), "LLM")
    cut = from_httpx(httpx.RemoteProtocolError("incomplete", request=request), "LLM")
    assert isinstance(connect, UpstreamConnectError) and connect.code == "upstream_error"
    assert isinstance(idle, UpstreamTimeout) and idle.phase == "idle" and idle.code == "timeout"
    assert isinstance(cut, UpstreamProtocolError)
    assert all(isinstance(e, UpstreamError) for e in (connect, idle, cut))
    assert connect.to_dict() == {"code": "upstream_error", "message": connect.message}


def test_http_errors_carry_status_and_retry_after() -> None:
    error = UpstreamHTTPError("LLM: HTTP 429", 429, retry_after=2.0)
    assert (error.upstream_status, error.retry_after, error.code) == (429, 2.0, "upstream_error")


def test_upstream_errors_are_gateway_errors_answered_as_bad_gateway() -> None:
    """One error root: an upstream failure that reaches a client answers 502 (504 if slow)."""
    refused = UpstreamHTTPError("LLM: HTTP 401", 401)
    slow = UpstreamTimeout("idle", "LLM: no chunk within 5s")
    assert isinstance(refused, GatewayError) and isinstance(slow, GatewayError)
    assert (refused.status_code, slow.status_code) == (502, 504)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
