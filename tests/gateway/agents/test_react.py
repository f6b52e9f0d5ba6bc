"""The ReAct agent against llm_stub and a real MCP server behind the MCP client service."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import pytest

from gateway.agents import AgentLimits, agent_services
from gateway.protocol import AgentRequest, TaskStatus
from tests.gateway.agents.support import (
    Upstreams,
    check_streaming_rule,
    first_index,
    frames_of,
    log_of,
    payload_of,
    run_task,
    running_manager,
    wait_for_type,
)

pytestmark = pytest.mark.anyio


async def test_react_calls_an_mcp_tool_and_streams_its_answer(services: dict[str, Any]) -> None:
    record, messages = await run_task(
        services, AgentRequest(query="echo hello from the gateway", agentType=5)
    )

    assert record.status is TaskStatus.COMPLETED, record
    check_streaming_rule(messages)
    types = [m["messageType"] for m in messages]
    at = first_index(types, "tool_thought")
    at = first_index(types, "tool_result", at + 1)
    at = first_index(types, "agent_stream", at + 1)
    assert first_index(types, "result", at + 1) == len(types) - 1
    assert "plan" not in types and "task" not in types
    tool_result = payload_of(messages[types.index("tool_result")])
    assert tool_result["toolName"] == "echo"
    assert tool_result["toolParam"] == {"message": "echo hello from the gateway"}
    assert tool_result["toolResult"] == "Echo: echo hello from the gateway"
    final = next(m for m in messages if m["messageType"] == "agent_stream")
    answer = frames_of(messages, final["messageId"])
    assert len(answer) > 2, "the answer is streamed as deltas before its final frame"
    assert {m["messageType"] for m in answer[:-1]} == {"tool_thought"}
    assert answer[-1] is final and final["isFinal"]
    assert final["result"] == "Done: Echo: echo hello from the gateway"
    assert messages[-1]["result"] == final["result"] == record.result
    thought = frames_of(messages, messages[types.index("tool_thought")]["messageId"])
    assert {m["messageType"] for m in thought} == {"tool_thought"}
    assert thought[-1]["toolThought"].startswith("I will use echo")


async def test_a_failing_mcp_tool_is_shown_and_fed_back_and_the_run_goes_on(
    services: dict[str, Any],
) -> None:
    record, messages = await run_task(services, AgentRequest(query="fail please", agentType=5))

    assert record.status is TaskStatus.COMPLETED
    check_streaming_rule(messages)
    tool_result = next(payload_of(m) for m in messages if m["messageType"] == "tool_result")
    assert tool_result["toolName"] == "fail"
    assert tool_result["toolResult"].startswith("Error: ")
    assert "tool failed" in tool_result["toolResult"]
    assert record.result is not None and record.result.startswith("Done: Error: ")


async def test_an_unreachable_tool_service_is_a_tool_error_not_a_failed_task(
    upstreams: Upstreams,
) -> None:
    settings = replace(upstreams.settings, tool_service_url="http://127.0.0.1:9")
    async with agent_services(settings, AgentLimits()) as services:
        record, messages = await run_task(
            services, AgentRequest(query="calculate the sum of 1 and 2", agentType=5)
        )

    assert record.status is TaskStatus.COMPLETED
    tool_result = next(payload_of(m) for m in messages if m["messageType"] == "tool_result")
    assert tool_result["toolName"] == "code_interpreter"
    assert tool_result["toolResult"].startswith("Error: tool code_interpreter: cannot connect")
    assert "code" not in [m["messageType"] for m in messages]


async def test_the_tool_call_budget_makes_the_model_answer_without_tools(
    upstreams: Upstreams,
) -> None:
    limits = AgentLimits(max_tool_calls=1)
    query = "calculate the sum of 3 and 4, then search for photosynthesis, then echo hi"
    async with agent_services(upstreams.settings, limits) as services:
        record, messages = await run_task(services, AgentRequest(query=query, agentType=3))

    assert record.status is TaskStatus.COMPLETED
    check_streaming_rule(messages)
    results = [payload_of(m) for m in messages if m["messageType"] == "tool_result"]
    assert [r["toolName"] for r in results] == ["code_interpreter"]
    assert [m["messageType"] for m in messages].count("task") == 3


async def test_one_step_allowed_means_an_answer_without_tools(upstreams: Upstreams) -> None:
    async with agent_services(upstreams.settings, AgentLimits(max_steps=1)) as services:
        record, messages = await run_task(services, AgentRequest(query="echo hi", agentType=5))

    assert record.status is TaskStatus.COMPLETED
    types = [m["messageType"] for m in messages]
    assert "tool_result" not in types
    finals = [m for m in messages if m["isFinal"] and m["messageType"] != "status"]
    assert [m["messageType"] for m in finals] == ["agent_stream", "result"]
    assert record.result is not None and record.result.startswith("You asked: echo hi")


async def test_cancelling_a_react_run_during_a_tool_call_ends_it_cancelled(
    services: dict[str, Any],
) -> None:
    async with running_manager(services) as (manager, store):
        record, _ = await manager.submit(AgentRequest(query="slow for 20 seconds", agentType=5))
        with anyio.fail_after(20):
            await wait_for_type(store, record.task_id, "tool_thought")
            cancelled = await manager.cancel(record.task_id)
        messages = await log_of(store, record.task_id)

    assert cancelled.status is TaskStatus.CANCELLED
    check_streaming_rule(messages)
    assert messages[-1]["messageType"] == "status" and messages[-1]["status"] == "CANCELLED"
    assert "tool_result" not in [m["messageType"] for m in messages]
