"""Fixtures of the tool-service tests: a fake LLM and the tool service, each on a real uvicorn."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import serve_app
from tests.tool_service.fake_llm import FakeLLM, Reply
from tests.tool_service.support import Service, ServiceFactory
from tool_service import Settings, create_app

_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(autouse=True)
def subreaper() -> Iterator[None]:
    """Make this process the reaper of its orphaned descendants while a test runs.

    A process a sandbox run leaves behind then stays a descendant of the test process, where
    :func:`~tests.tool_service.support.sandbox_processes` finds it, instead of moving to init.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """A scripted LLM on a free port (``fake_llm.url`` is its ``/v1`` base URL)."""
    fake = FakeLLM()
    fake.reply = Reply()
    with serve_app(fake.app()) as server:
        fake.url = server.url + "/v1"
        yield fake


@pytest.fixture
def make_service(fake_llm: FakeLLM, tmp_path: Path) -> ServiceFactory:
    """Start a tool service with test settings; keyword arguments override environment values."""

    @contextlib.contextmanager
    def start(**overrides: str) -> Iterator[Service]:
        env = {
            "LLM_BASE_URL": fake_llm.url,
            "LLM_API_KEY": "sk-test-key",
            "LLM_MODEL": "fake-model",
            "CODE_TIMEOUT": "2",
            "CODE_MEMORY_MB": "256",
            "MAX_FILE_BYTES": str(1024 * 1024),
            "FILE_ROOT": str(tmp_path / "files"),
            "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
            "HEARTBEAT_INTERVAL": "15",
            **overrides,
        }
        settings = Settings.from_env(env)
        with serve_app(create_app(settings)) as server:
            service = Service(server.url, settings)
            try:
                yield service
            finally:
                service.client.close()

    return start


@pytest.fixture
def service(make_service: ServiceFactory) -> Iterator[Service]:
    """A tool service with the default test settings."""
    with make_service() as running:
        yield running
