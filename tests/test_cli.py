"""The ``agent-gateway`` parser and the wiring ``dev`` gives its services."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import SERVICES, build_parser
from gateway.devserver import DEV_ORDER, DevConfig, service_env


def test_serve_still_accepts_every_service_of_the_table() -> None:
    for name in SERVICES:
        args = build_parser().parse_args(["serve", name, "--port", "9999"])
        assert (args.service, args.port) == (name, 9999)
    assert SERVICES["frontend_stub"].factory == "frontend_stub.app:create_app"
    assert set(DEV_ORDER) == set(SERVICES)


def test_dev_takes_a_base_port_and_per_service_ports() -> None:
    args = build_parser().parse_args(["dev", "--base-port", "9000", "--llm-stub-port", "9100"])
    assert args.base_port == 9000
    assert args.llm_stub_port == 9100
    assert args.frontend_stub_port == 0
    assert build_parser().parse_args(["dev", "--frontend-port", "1"]).frontend_stub_port == 1


def test_run_takes_the_query_agent_type_gateway_and_json() -> None:
    args = build_parser().parse_args(
        ["run", "hello", "--agent-type", "0", "--gateway", "http://gw:1", "--json"]
    )
    assert (args.query, args.agent_type, args.gateway, args.json) == (
        "hello",
        0,
        "http://gw:1",
        True,
    )


def config() -> DevConfig:
    ports = {"gateway": 1, "tool_service": 2, "mcp_client": 3, "llm_stub": 4, "frontend_stub": 5}
    return DevConfig(host="0.0.0.0", ports=ports)


def test_dev_wires_each_service_to_the_others_by_url() -> None:
    env = service_env(config(), "gateway", {"PATH": "/bin"})
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == "1"
    assert env["LLM_BASE_URL"] == "http://127.0.0.1:4/v1"
    assert env["TOOL_SERVICE_URL"] == "http://127.0.0.1:2"
    assert env["MCP_CLIENT_URL"] == "http://127.0.0.1:3"
    assert env["CORS_ORIGINS"] == "http://127.0.0.1:5,http://localhost:5"
    assert service_env(config(), "frontend_stub", {})["GATEWAY_URL"] == "http://127.0.0.1:1"
    assert "REDIS_URL" not in env


@pytest.mark.parametrize("name", ["LLM_BASE_URL", "REDIS_URL"])
def test_dev_keeps_a_real_llm_or_redis_given_in_the_environment(name: str) -> None:
    env = service_env(config(), "gateway", {name: "http://elsewhere/v1"})
    assert env[name] == "http://elsewhere/v1"


def test_dev_allows_the_bridge_to_reach_the_mcp_servers_the_gateway_is_given() -> None:
    local = "http://127.0.0.1:9100/mcp"
    env = service_env(config(), "mcp_client", {"MCP_SERVER_URLS": local})
    assert env["MCP_ALLOWED_SERVERS"] == local
    kept = service_env(
        config(), "mcp_client", {"MCP_SERVER_URLS": local, "MCP_ALLOWED_SERVERS": "mcp.example"}
    )
    assert kept["MCP_ALLOWED_SERVERS"] == "mcp.example"
    assert "MCP_ALLOWED_SERVERS" not in service_env(config(), "mcp_client", {})


def test_dev_adds_the_page_origins_to_cors_origins_already_set() -> None:
    env = service_env(config(), "gateway", {"CORS_ORIGINS": "https://app.example.com"})
    assert env["CORS_ORIGINS"].split(",") == [
        "http://127.0.0.1:5",
        "http://localhost:5",
        "https://app.example.com",
    ]


def test_the_readme_opens_with_the_two_commands_that_run_the_system_and_the_tests() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    opening = readme.split("```")[:3]
    assert opening[0] == ""
    assert opening[1].splitlines()[1:] == [
        "pip install -e . && agent-gateway dev",
        "pip install -e '.[test]' && python3 -m pytest -q",
    ]
