"""``compose.yaml`` and the ``Dockerfile``: valid, complete, and wired consistently."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.cli import SERVICES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
APP_SERVICES = set(SERVICES)  # gateway, tool_service, mcp_client, llm_stub, frontend_stub
URL_VARIABLES = ("REDIS_URL", "LLM_BASE_URL", "TOOL_SERVICE_URL", "MCP_CLIENT_URL")
INTERNAL_SERVICES = {"tool_service", "mcp_client"}  # DESIGN §10: reached only by the gateway


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    found: dict[str, dict[str, Any]] = document["services"]
    return found


def container_port(service: dict[str, Any]) -> int:
    return int(service["environment"]["PORT"])


def default_of(value: str) -> str:
    """``${LLM_BASE_URL:-http://llm_stub:8000/v1}`` → its default; other values unchanged."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)
    return match.group(1) if match else value


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed (.ci/run installs it)", pytrace=False)
    done = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def test_every_service_and_redis_are_present(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == APP_SERVICES | {"redis"}


def test_each_app_service_listens_on_its_own_port_on_all_interfaces(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in APP_SERVICES:
        service = services[name]
        env = service["environment"]
        assert env["HOST"] == "0.0.0.0", name
        assert container_port(service) == SERVICES[name].port, name
        if name not in INTERNAL_SERVICES:
            targets = [str(p).rsplit(":", 1)[-1] for p in service["ports"]]
            assert str(SERVICES[name].port) in targets, name
        assert service["command"] == ["agent-gateway", "serve", name]


def test_the_internal_services_are_not_published_and_share_the_gateways_token(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in INTERNAL_SERVICES:
        assert "ports" not in services[name], f"{name} must not be published on the host"
    tokens = {
        name: services[name]["environment"].get("SERVICE_TOKEN")
        for name in (*INTERNAL_SERVICES, "gateway")
    }
    assert set(tokens.values()) == {"${SERVICE_TOKEN:-}"}, tokens


def test_urls_in_the_environment_name_existing_services_and_their_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    checked = 0
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            if variable not in URL_VARIABLES:
                continue
            url = urlsplit(default_of(str(value)))
            assert url.hostname in services, f"{name}.{variable} names {url.hostname}"
            target = services[url.hostname]
            expected = 6379 if url.hostname == "redis" else container_port(target)
            assert url.port == expected, f"{name}.{variable} uses port {url.port}"
            checked += 1
    gateway_env = services["gateway"]["environment"]
    assert set(URL_VARIABLES) <= set(gateway_env)
    assert checked >= len(URL_VARIABLES)


def test_the_page_reaches_a_published_gateway_and_the_gateway_allows_its_origin(
    services: dict[str, dict[str, Any]],
) -> None:
    page = urlsplit(services["frontend_stub"]["environment"]["GATEWAY_URL"])
    published = [str(p).split(":")[0] for p in services["gateway"]["ports"]]
    assert any(str(page.port) == p.split("-")[0] for p in published)
    origins = services["gateway"]["environment"]["CORS_ORIGINS"].split(",")
    assert "http://localhost:3000" in origins


def test_the_gateway_scales_without_a_fixed_container_name(
    services: dict[str, dict[str, Any]],
) -> None:
    gateway = services["gateway"]
    assert "container_name" not in gateway
    assert gateway["deploy"]["replicas"] >= 2
    assert "-" in str(gateway["ports"][0]).split(":")[0]  # a host port range, one per replica


def test_every_service_has_a_healthcheck_against_its_health_endpoint(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in APP_SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        assert "urllib" in test[3], name
        assert f"127.0.0.1:{SERVICES[name].port}{SERVICES[name].health}" in test[3], name


def test_depends_on_targets_exist_and_wait_until_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services["gateway"]["depends_on"]) >= {"redis", "llm_stub"}
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert condition == {"condition": "service_healthy"}, f"{name} → {target}"


def test_redis_persists_to_a_volume_with_the_append_only_file(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_the_dockerfile_serves_with_agent_gateway_serve() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert cmd.group(1).startswith('["agent-gateway", "serve"')
    for package in APP_SERVICES:
        assert f"COPY {package} " in dockerfile


def test_the_tool_service_gets_what_bubblewrap_needs_and_no_capability(
    services: dict[str, dict[str, Any]],
) -> None:
    tool_service = services["tool_service"]
    options = set(tool_service.get("security_opt") or [])
    assert {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"} <= options
    assert not tool_service.get("privileged")
    assert not tool_service.get("cap_add")
    assert "SANDBOX" not in (tool_service.get("environment") or {})  # never unsafe-none here
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"apt-get install [^\n]*\bbubblewrap\b", dockerfile)


def test_file_links_lead_browsers_to_the_published_gateway_not_the_internal_tool_service(
    services: dict[str, dict[str, Any]],
) -> None:
    public = services["gateway"]["environment"]["PUBLIC_URL"]
    assert public == services["frontend_stub"]["environment"]["GATEWAY_URL"]
    published = [str(p).split(":")[0].split("-")[0] for p in services["gateway"]["ports"]]
    assert str(urlsplit(public).port) in published
    assert "PUBLIC_URL" not in services["tool_service"]["environment"]  # its links are internal
