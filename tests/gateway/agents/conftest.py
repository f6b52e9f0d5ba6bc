"""Fixtures of the agent tests: real upstream servers once per session, and opened services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.agents import AgentLimits, agent_services
from tests.gateway.agents.support import Upstreams, running_upstreams


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    """llm_stub, tool_service, mcp_client and an SDK MCP server for the whole session."""
    with running_upstreams(tmp_path_factory.mktemp("agents")) as running:
        yield running


@pytest.fixture
async def services(upstreams: Upstreams) -> AsyncIterator[dict[str, Any]]:
    """The agents' services, opened against the real upstreams."""
    async with agent_services(upstreams.settings, AgentLimits()) as opened:
        yield opened
