"""The frontend stub's app: the page, its modules, ``/config.js`` and ``/health``."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from frontend_stub.app import FrontendSettings, create_app


def client(gateway_url: str = "http://gw.example:8080") -> TestClient:
    return TestClient(create_app(FrontendSettings(gateway_url=gateway_url)))


def test_health_answers_ok_with_the_gateway_url() -> None:
    with client() as c:
        response = c.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "gatewayUrl": "http://gw.example:8080"}


def test_config_js_tells_the_page_where_the_gateway_is() -> None:
    with client() as c:
        response = c.get("/config.js")
    assert response.headers["content-type"].startswith("text/javascript")
    assert 'window.AGW_CONFIG = Object.freeze({"gatewayUrl":"http://gw.example:8080"});' in (
        response.text
    )


def test_config_js_cannot_be_used_to_close_the_script_element() -> None:
    with client("http://x/</script><script>alert(1)//") as c:
        text = c.get("/config.js").text
    assert "</script>" not in text


def test_the_gateway_url_comes_from_the_environment_with_a_local_default() -> None:
    assert FrontendSettings.from_env({}).gateway_url == "http://127.0.0.1:8080"
    env = {"GATEWAY_URL": "https://agents.example.com/"}
    assert FrontendSettings.from_env(env).gateway_url == "https://agents.example.com"


def test_the_page_and_its_modules_are_served_without_a_build_step() -> None:
    with client() as c:
        page = c.get("/")
        assert page.status_code == 200
        for element_id in ("query", "deep-think", "agent-type", "cancel", "answer", "status"):
            assert f'id="{element_id}"' in page.text
        for module in ("main.js", "stream.js", "sse.js", "render.js", "style.css"):
            response = c.get(f"/static/{module}")
            assert response.status_code == 200, module
            # No bundler and no npm packages: every import is a sibling module.
            imports = re.findall(r'^import .* from "([^"]+)";$', response.text, re.MULTILINE)
            assert all(path.startswith("./") for path in imports), module
        assert 'type="module" src="/static/main.js"' in page.text


def test_python_files_of_the_static_folder_are_not_served() -> None:
    with client() as c:
        assert c.get("/static/__init__.py").status_code == 404
