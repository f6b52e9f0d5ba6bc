"""The plan-and-execute agent against llm_stub, the tool service and a real MCP server."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.protocol import AgentRequest, TaskStatus
from tests.gateway.agents.support import (
    TOOL_OUTPUT_TYPES,
    check_streaming_rule,
    first_index,
    payload_of,
    run_task,
)

pytestmark = pytest.mark.anyio

QUERY = "calculate the sum of 3 and 4, then search for photosynthesis, then echo hello agents"


async def test_plan_and_execute_prints_its_work_in_order_and_finishes_with_a_result(
    services: dict[str, Any],
) -> None:
    record, messages = await run_task(services, AgentRequest(query=QUERY, agentType=3))

    assert record.status is TaskStatus.COMPLETED, record
    check_streaming_rule(messages)
    types = [m["messageType"] for m in messages]
    at = first_index(types, "plan_thought")
    for wanted in ("plan", "task", "tool_thought", TOOL_OUTPUT_TYPES, "task_summary", "result"):
        at = first_index(types, wanted, at + 1)
    assert types[-1] == "result" and messages[-1]["finish"]
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))


async def test_each_plan_step_runs_its_tool_and_the_plan_tracks_progress(
    services: dict[str, Any],
) -> None:
    record, messages = await run_task(services, AgentRequest(query=QUERY, agentType=3))

    assert record.status is TaskStatus.COMPLETED
    finals = [m for m in messages if m["isFinal"]]
    plans = [payload_of(m) for m in finals if m["messageType"] == "plan"]
    steps = plans[0]["steps"]
    assert len(steps) == 3
    assert plans[0]["stepStatus"] == ["not_started"] * 3
    assert plans[1]["stepStatus"] == ["in_progress", "not_started", "not_started"]
    assert plans[-1]["stepStatus"] == ["completed"] * 3
    assert all(plans[-1]["notes"])
    tasks = [payload_of(m) for m in finals if m["messageType"] == "task"]
    assert tasks == steps

    code = next(payload_of(m) for m in finals if m["messageType"] == "code")
    assert "sum: 7" in code["codeOutput"]
    search = next(payload_of(m) for m in finals if m["messageType"] == "deep_search")
    assert search["answer"] and search["searchResult"]["docs"]
    results = [payload_of(m) for m in messages if m["messageType"] == "tool_result"]
    assert [r["toolName"] for r in results] == ["code_interpreter", "deepsearch", "echo"]
    assert results[2]["toolResult"].startswith("Echo: ")
    summaries = [payload_of(m) for m in finals if m["messageType"] == "task_summary"]
    assert len(summaries) == 3 and all(s.startswith("Done: ") for s in summaries)

    result = messages[-1]
    assert result["result"].startswith("## Summary")
    assert result["resultMap"]["taskSummary"] == result["result"]
    assert record.result == result["result"]
