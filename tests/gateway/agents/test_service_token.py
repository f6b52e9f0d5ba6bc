"""The internal services behind a service token (DESIGN §10), reached by the agents with it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.protocol import AgentRequest, TaskStatus
from tests.gateway.agents.support import Upstreams, payload_of, run_task

pytestmark = pytest.mark.anyio

PLAN = "calculate the sum of 3 and 4, then search for photosynthesis, then echo hello agents"


async def test_the_tool_service_and_the_bridge_refuse_callers_without_the_token(
    upstreams: Upstreams,
) -> None:
    settings = upstreams.settings
    body = {"server_url": upstreams.mcp_server_url}
    calls = [
        (settings.tool_service_url + "/v1/tool/code_interpreter", {"task": "print(1)"}),
        (settings.mcp_client_url + "/v1/tool/list", body),
    ]
    async with httpx.AsyncClient(timeout=30) as client:
        for url, payload in calls:
            missing = await client.post(url, json=payload)
            wrong = await client.post(url, json=payload, headers={"Authorization": "Bearer x"})
            for refused in (missing, wrong):
                assert refused.status_code == 401, (url, refused.text)
                assert refused.json()["error"]["code"] == "unauthorized"
        listed = await client.post(calls[1][0], json=body, headers=settings.service_headers)
        healthy = [
            await client.get(settings.tool_service_url + "/health"),
            await client.get(settings.mcp_client_url + "/health"),
        ]
    assert listed.status_code == 200 and listed.json()["code"] == 200
    assert [r.status_code for r in healthy] == [200, 200]


async def test_a_plan_runs_its_tools_through_both_services_with_the_token(
    services: dict[str, Any],
) -> None:
    record, messages = await run_task(services, AgentRequest(query=PLAN, agentType=3))

    assert record.status is TaskStatus.COMPLETED, record
    results = [payload_of(m) for m in messages if m["messageType"] == "tool_result"]
    assert [r["toolName"] for r in results] == ["code_interpreter", "deepsearch", "echo"]
    code = [payload_of(m) for m in messages if m["messageType"] == "code" and m["isFinal"]]
    assert "sum: 7" in code[-1]["codeOutput"]
    assert results[-1]["toolResult"].startswith("Echo: ")  # through the MCP bridge
