"""LLM failures: the task fails with the upstream's code and keeps what was already printed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import httpx
import orjson
import pytest

from gateway.agents import AgentLimits, agent_services, plan_execute_agent, react_agent
from gateway.app import create_app
from gateway.tasks import TaskFailure
from tests.gateway.agents.support import (
    Upstreams,
    check_streaming_rule,
    direct_context,
    gateway_settings,
    log_of,
)
from tests.helpers import serve_app

pytestmark = pytest.mark.anyio

CUT = "echo hello [[stub:fault=cut]]"


async def test_a_model_stream_cut_midway_fails_with_upstream_error_and_keeps_the_partial_answer(
    services: dict[str, Any],
) -> None:
    async with direct_context(services, CUT, 5) as (ctx, store):
        with pytest.raises(TaskFailure) as failure:
            await react_agent(ctx)
        messages = await log_of(store, ctx.task_id)

    assert failure.value.code == "upstream_error"
    assert "ended before [DONE]" in failure.value.message or "broke" in failure.value.message
    check_streaming_rule(messages)
    types = [m["messageType"] for m in messages]
    assert types == ["tool_thought"] * (len(messages) - 1) + ["agent_stream"]
    assert len(messages) >= 2 and messages[-1]["isFinal"]
    assert ctx.printer.partial_answer == messages[-1]["result"] != ""


async def test_a_cut_during_planning_ends_the_plan_thought_and_fails(
    services: dict[str, Any],
) -> None:
    async with direct_context(services, "search for bees [[stub:fault=cut]]", 3) as (ctx, store):
        with pytest.raises(TaskFailure) as failure:
            await plan_execute_agent(ctx)
        messages = await log_of(store, ctx.task_id)

    assert failure.value.code == "upstream_error"
    check_streaming_rule(messages)
    assert {m["messageType"] for m in messages} == {"plan_thought"}
    assert messages[-1]["isFinal"] and messages[-1]["planThought"].startswith("To answer")


async def test_a_stalled_model_fails_the_task_with_timeout(upstreams: Upstreams) -> None:
    settings = replace(upstreams.settings, llm_idle_timeout=0.5)
    async with agent_services(settings, AgentLimits()) as services:
        async with direct_context(services, "echo hi [[stub:fault=stall]]", 5) as (ctx, store):
            with anyio.fail_after(10), pytest.raises(TaskFailure) as failure:
                await react_agent(ctx)
            messages = await log_of(store, ctx.task_id)

    assert failure.value.code == "timeout"
    check_streaming_rule(messages)


async def test_a_failed_run_through_the_gateway_is_failed_with_an_error_message_last(
    upstreams: Upstreams,
) -> None:
    app = create_app(gateway_settings(upstreams.settings))
    with serve_app(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            created = await client.post("/api/tasks", json={"query": CUT, "agentType": 5})
            assert created.status_code == 202, created.text
            task_id = created.json()["taskId"]
            messages = []
            with anyio.fail_after(20):
                async with client.stream("GET", f"/api/tasks/{task_id}/events") as events:
                    async for line in events.aiter_lines():
                        if line.startswith("data:"):
                            messages.append(orjson.loads(line[5:]))
            snapshot = (await client.get(f"/api/tasks/{task_id}")).json()

    assert snapshot["status"] == "FAILED"
    assert snapshot["error"]["code"] == "upstream_error"
    assert messages[-1]["messageType"] == "error" and messages[-1]["finish"]
    assert messages[-1]["error"]["code"] == "upstream_error"
    assert [m["messageType"] for m in messages][:2] == ["status", "tool_thought"]
    assert messages[-2]["messageType"] == "agent_stream" and messages[-2]["isFinal"]
    check_streaming_rule(messages[1:-1])
    assert snapshot["result"] == messages[-2]["result"]
