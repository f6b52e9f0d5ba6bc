"""The page's links to a task's files: they lead to the gateway, which hands the browser the file.

A stack of its own: the tool service is real here (behind its service token, as in compose),
so the report tool writes a file.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from frontend_stub.app import FrontendSettings
from frontend_stub.app import create_app as create_frontend
from gateway.agents.tools import tool_request_id
from gateway.app import create_app as create_gateway
from gateway.settings import Settings
from gateway.upstream import UpstreamSettings
from llm_stub import create_app as create_stub
from llm_stub.settings import Knobs, StubSettings
from tests.e2e.conftest import open_page
from tests.e2e.test_page import ask, wait_for_status
from tests.helpers import free_port, serve_app
from tool_service import Settings as ToolSettings
from tool_service import create_app as create_tool_service


@dataclass
class FileStack:
    """The gateway (its PUBLIC_URL its own address), the page, and the internal tool service."""

    gateway_url: str
    frontend_url: str
    tool_service_url: str
    token: str


@pytest.fixture(scope="module")
def file_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileStack]:
    workdir: Path = tmp_path_factory.mktemp("page-files")
    token = secrets.token_urlsafe(16)
    gateway_port, frontend_port = free_port(), free_port()
    with serve_app(create_stub(StubSettings(knobs=Knobs(tokens_per_second=0)))) as llm:
        tool_settings = ToolSettings.from_env(
            {
                "LLM_BASE_URL": llm.url + "/v1",
                "FILE_ROOT": str(workdir / "files"),
                "SANDBOX_ROOT": str(workdir / "sandboxes"),
                "SERVICE_TOKEN": token,
            }
        )
        with serve_app(create_tool_service(tool_settings)) as tools:
            settings = Settings(
                cors_origins=(f"http://127.0.0.1:{frontend_port}",),
                public_url=f"http://127.0.0.1:{gateway_port}",
                upstream=UpstreamSettings(
                    llm_base_url=llm.url + "/v1",
                    llm_max_retries=0,
                    tool_service_url=tools.url,
                    tool_timeout=30,
                    service_token=token,
                ),
            )
            with serve_app(create_gateway(settings), port=gateway_port) as gateway:
                page_settings = FrontendSettings(gateway_url=gateway.url)
                with serve_app(create_frontend(page_settings), port=frontend_port) as frontend:
                    yield FileStack(gateway.url, frontend.url, tools.url, token)


@pytest.fixture
def react_page(browser: Browser, file_stack: FileStack) -> Iterator[Page]:
    with open_page(browser, file_stack.frontend_url + "/?agentType=5", timeout=20_000) as page:
        yield page


def test_the_page_links_a_written_file_to_the_gateway_and_the_browser_gets_its_bytes(
    react_page: Page, file_stack: FileStack
) -> None:
    page = react_page
    task_id = ask(page, "write a report about rivers")
    wait_for_status(page, "COMPLETED", timeout=30_000)

    link = page.locator("ul.files a")
    expect(link).to_have_text("report.md")
    href = link.get_attribute("href")
    assert href == f"{file_stack.gateway_url}/api/tasks/{task_id}/files/report.md"
    internal = f"/v1/file_tool/download/{tool_request_id(task_id)}/report.md"
    stored = httpx.get(
        file_stack.tool_service_url + internal,
        headers={"Authorization": f"Bearer {file_stack.token}"},
        timeout=10,
    )
    assert stored.status_code == 200 and b"write a report" in stored.content

    downloaded = page.request.get(href)  # what the browser gets following the link
    assert downloaded.status == 200
    assert downloaded.body() == stored.content
    assert downloaded.headers["content-disposition"] == 'attachment; filename="report.md"'

    page.goto(href.replace("/files/", "/preview/"))
    assert page.evaluate("document.body.textContent") == stored.text  # shown as plain text
