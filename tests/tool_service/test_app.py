"""The app shell: health, JSON errors for bad input, settings from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import spawn_service
from tests.tool_service.support import Service
from tool_service import Settings


def test_health_answers_200_json(service: Service) -> None:
    response = service.client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tool/code_interpreter", {"requestId": "r1"}),
        ("/v1/tool/code_interpreter", {"task": "no request id"}),
        ("/v1/tool/deepsearch", {"request_id": "r1", "query": ""}),
        ("/v1/tool/report", {"requestId": "r1", "task": "t", "fileType": "pdf"}),
        ("/v1/tool/report", {"requestId": "../etc", "task": "t"}),
        (
            "/v1/tool/code_interpreter",
            {"requestId": "r1", "code": "1", "streamMode": {"mode": "x"}},
        ),
    ],
)
def test_bad_input_gets_a_4xx_json_error(service: Service, path: str, body: dict) -> None:
    response = service.client.post(path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"]


def test_a_body_that_is_not_json_is_refused(service: Service) -> None:
    response = service.client.post(
        "/v1/tool/report", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_unknown_routes_and_methods_answer_json_errors(service: Service) -> None:
    missing = service.client.get("/v1/tool/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = service.client.get("/v1/tool/report")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_settings_are_read_from_the_environment_and_hide_the_api_key(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "LLM_BASE_URL": "http://llm.example/v1/",
            "LLM_API_KEY": "sk-very-secret",
            "CODE_TIMEOUT": "7",
            "FILE_ROOT": str(tmp_path),
            "SANDBOX_ROOT": str(tmp_path / "sb"),
            "HEARTBEAT_INTERVAL": "3",
            "PUBLIC_URL": "https://tools.example/",
        }
    )
    assert settings.llm.base_url == "http://llm.example/v1"
    assert settings.sandbox.timeout == 7
    assert settings.heartbeat_interval == 3
    assert settings.public_url == "https://tools.example"
    assert "sk-very-secret" not in repr(settings)
    with pytest.raises(ValueError, match="CODE_TIMEOUT"):
        Settings.from_env({"CODE_TIMEOUT": "soon", "FILE_ROOT": str(tmp_path)})


def test_the_cli_serves_the_tool_service_from_its_environment(tmp_path: Path) -> None:
    env = {
        "FILE_ROOT": str(tmp_path / "files"),
        "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
        "CODE_TIMEOUT": "5",
        "LLM_API_KEY": "sk-cli-secret",
    }
    with spawn_service("tool_service", env=env, health="/health") as url:
        response = httpx.post(
            url + "/v1/tool/code_interpreter",
            json={"requestId": "cli", "code": "import os; print(len(os.environ))", "stream": False},
            timeout=20,
        )
    assert response.status_code == 200
    assert response.json()["codeOutput"] == "3\n"


def test_with_a_service_token_every_route_but_health_needs_it(make_service: Any) -> None:
    body = {"requestId": "tok", "code": "print(6 * 7)", "stream": False}
    with make_service(SERVICE_TOKEN="s3rvice-token") as service:
        client = service.client
        refused = [
            client.post("/v1/tool/code_interpreter", json=body),
            client.post(
                "/v1/tool/code_interpreter", json=body, headers={"Authorization": "Bearer nope"}
            ),
            client.post(
                "/v1/tool/code_interpreter",
                json=body,
                headers={"Authorization": "Basic s3rvice-token"},
            ),
            client.get("/v1/file_tool/download/tok/out.txt"),
        ]
        health = client.get("/health")
        ran = client.post(
            "/v1/tool/code_interpreter",
            json=body,
            headers={"Authorization": "Bearer s3rvice-token"},
        )
    for response in refused:
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert health.status_code == 200
    assert ran.status_code == 200 and ran.json()["codeOutput"] == "42\n"
    assert "s3rvice-token" not in repr(service.settings)
