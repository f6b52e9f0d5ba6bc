"""Fixtures of the browser tests: Chromium via Playwright, and a gateway + page stack.

The page talks to the gateway through a :class:`CuttableProxy`, so a test can drop the network
under a live stream. The gateway is a real uvicorn server with CORS for the page's origin; its
model is llm_stub, writing at a watchable pace, and its tool service is unreachable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from frontend_stub.app import FrontendSettings
from frontend_stub.app import create_app as create_frontend
from gateway.app import create_app as create_gateway
from gateway.settings import Settings
from gateway.upstream import UpstreamSettings
from llm_stub import create_app as create_stub
from llm_stub.settings import Knobs, StubSettings
from tests.e2e.proxy import CuttableProxy, cuttable_proxy
from tests.helpers import free_port, serve_app

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ECHO_DELAY_MS = 50
STUB_TOKENS_PER_SECOND = 20  # the model (llm_stub) writes slowly enough to watch
RETRY_MS = 300


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium (the Debian package) per module.

    Module scope on purpose: the sync Playwright API keeps an event loop running in the main
    thread while it is open, which would break ``asyncio.run`` in every later test module.
    """
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Stack:
    """A running gateway, the proxy in front of it, and the page's server."""

    gateway_url: str
    proxy: CuttableProxy
    frontend_url: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    frontend_port = free_port()
    origin = f"http://127.0.0.1:{frontend_port}"
    settings = Settings(
        cors_origins=(origin,),
        echo_token_delay_ms=ECHO_DELAY_MS,
        sse_retry_ms=RETRY_MS,
        heartbeat_interval=1.0,
    )
    stub = StubSettings(knobs=Knobs(tokens_per_second=STUB_TOKENS_PER_SECOND))
    with serve_app(create_stub(stub)) as llm:
        settings = replace(
            settings,
            upstream=UpstreamSettings(
                llm_base_url=llm.url + "/v1",
                llm_max_retries=0,
                tool_service_url="http://127.0.0.1:9",  # nothing listens: a tool call errs
                mcp_server_urls=(),
            ),
        )
        with (
            serve_app(create_gateway(settings)) as gateway,
            cuttable_proxy(gateway.port) as proxy,
        ):
            page_settings = FrontendSettings(gateway_url=proxy.url)
            with serve_app(create_frontend(page_settings), port=frontend_port) as frontend:
                yield Stack(gateway.url, proxy, frontend.url)


@contextlib.contextmanager
def open_page(browser: Browser, url: str, timeout: float = 15_000) -> Iterator[Page]:
    """A fresh page (own context) at ``url``, once it says it is ready; closed after the block,
    which fails if the page raised an uncaught error."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(timeout)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh page (own context) on the frontend, with the echo agent selected."""
    with open_page(browser, stack.frontend_url + "/?agentType=0") as page:
        yield page
