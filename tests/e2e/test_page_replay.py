"""The page following a finished task from the start: a compacted replay (DESIGN §5)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from frontend_stub.app import FrontendSettings
from frontend_stub.app import create_app as create_frontend
from gateway.app import create_app as create_gateway
from gateway.settings import Settings
from tests.e2e.conftest import open_page
from tests.gateway.support import echo_query
from tests.helpers import free_port, serve_app


@pytest.fixture(scope="module")
def urls() -> Iterator[tuple[str, str]]:
    """A gateway whose echo agent writes as fast as it can, and the page's server."""
    frontend_port = free_port()
    settings = Settings(
        cors_origins=(f"http://127.0.0.1:{frontend_port}",), echo_token_delay_ms=0.0
    )
    with serve_app(create_gateway(settings)) as gateway:
        page_settings = FrontendSettings(gateway_url=gateway.url)
        with serve_app(create_frontend(page_settings), port=frontend_port) as frontend:
            yield gateway.url, frontend.url


def finished_task(gateway_url: str, words: int) -> dict[str, object]:
    """Run an echo task of ``words`` words to its end; its final snapshot."""
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        task = client.post("/api/tasks", json={"query": echo_query(words), "agentType": 0})
        task_id = task.json()["taskId"]
        for _ in range(600):
            snapshot: dict[str, object] = client.get(f"/api/tasks/{task_id}").json()
            if snapshot["status"] == "COMPLETED":
                return snapshot
            client.get(f"/api/tasks/{task_id}/events", timeout=30)  # waits for the end
    raise AssertionError("the task did not complete")


def follow_from_the_start(browser: Browser, frontend_url: str, task_id: object) -> Iterator[Page]:
    with open_page(browser, frontend_url) as page:
        page.click(f"#history li[data-task-id='{task_id}'] button")
        expect(page.locator("#status")).to_have_attribute("data-status", "COMPLETED")
        yield page


def test_the_page_replays_a_finished_2000_delta_task_in_a_few_frames(
    browser: Browser, urls: tuple[str, str]
) -> None:
    gateway_url, frontend_url = urls
    snapshot = finished_task(gateway_url, 2000)
    for page in follow_from_the_start(browser, frontend_url, snapshot["taskId"]):
        expect(page.locator("#answer")).to_have_text(echo_query(2000))
        seqs = page.evaluate("window.agw.seqs")
        assert seqs == sorted(set(seqs)) and seqs[-1] == snapshot["lastSeq"]
        assert len(seqs) <= 10  # the 2,000 deltas are replaced by the answer's final frame


def test_the_page_joins_a_long_final_replayed_in_pieces(
    browser: Browser, urls: tuple[str, str]
) -> None:
    gateway_url, frontend_url = urls
    snapshot = finished_task(gateway_url, 13_000)  # an answer of ~90 KB: more than one frame
    for page in follow_from_the_start(browser, frontend_url, snapshot["taskId"]):
        expect(page.locator("#answer")).to_have_text(echo_query(13_000))
        seqs = page.evaluate("window.agw.seqs")
        assert seqs == sorted(set(seqs)) and seqs[-1] == snapshot["lastSeq"]
        assert len(seqs) <= 10
        assert page.evaluate("window.agw.view.deltaMismatches") == 0
