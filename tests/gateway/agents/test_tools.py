"""The tool layer on its own: MCP tool naming, streamed-message endings, limits, registration."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from gateway.agents import AgentLimits, register_builtin_agents
from gateway.agents._mcp import discover_mcp_tools, server_slug
from gateway.agents._streams import LiveText, MessageStream
from gateway.agents.tools import ToolBox, tool_request_id
from gateway.tasks import TaskRegistry
from gateway.upstream import ToolCall
from tests.gateway.agents.support import Upstreams, check_streaming_rule, direct_context, log_of

pytestmark = pytest.mark.anyio


async def test_mcp_tools_keep_their_names_unless_another_tool_has_it(
    services: dict[str, Any], upstreams: Upstreams
) -> None:
    url = upstreams.mcp_server_url
    plain = await discover_mcp_tools(services["mcp"], [url, url])
    prefixed = await discover_mcp_tools(services["mcp"], [url], taken=["echo"])

    assert sorted(t.name for t in plain) == ["add", "echo", "fail", "protocol_error", "slow"]
    slug = server_slug(url)
    assert slug.startswith("127_0_0_1_") and slug.endswith("_mcp")
    assert f"{slug}__echo" in [t.name for t in prefixed]
    echo = next(t for t in prefixed if t.tool.name == "echo")
    schema = echo.schema()["function"]
    assert schema["name"] == f"{slug}__echo"
    assert schema["parameters"]["properties"]["message"]["type"] == "string"


async def test_an_unreachable_mcp_server_is_left_out(services: dict[str, Any]) -> None:
    assert await discover_mcp_tools(services["mcp"], ["http://127.0.0.1:9/mcp"]) == []


async def test_a_streamed_message_cut_by_a_cancel_still_gets_its_final_frame(
    services: dict[str, Any],
) -> None:
    async with direct_context(services, "q", 5) as (ctx, store):
        with anyio.CancelScope() as scope:
            text = LiveText(ctx.printer, "tool_thought")
            text.write("partial ")
            text.write("answer")
            try:
                scope.cancel()
                await anyio.lowlevel.checkpoint()
            finally:
                await text.interrupt("agent_stream")
        async with MessageStream(ctx.printer, "code") as code:
            await code.delta({"codeOutput": "1"}, {"codeOutput": "1", "fileInfo": []})
        messages = await log_of(store, ctx.task_id)

    check_streaming_rule(messages)
    assert [m["messageType"] for m in messages[:3]] == ["tool_thought"] * 2 + ["agent_stream"]
    assert messages[2]["result"] == "partial answer"
    assert messages[-1]["resultMap"] == {"codeOutput": "1", "fileInfo": []}


async def test_bad_tool_arguments_and_unknown_tools_are_errors_for_the_model(
    services: dict[str, Any],
) -> None:
    async with direct_context(services, "q", 5) as (ctx, store):
        box = ToolBox([], ctx.printer, tool_request_id(ctx.task_id), AgentLimits(), 5.0)
        bad = await box.call(ToolCall("c1", "nothing", "{not json"))
        unknown = await box.call(ToolCall("c2", "nothing", "{}"))
        messages = await log_of(store, ctx.task_id)

    assert bad.startswith("Error: the arguments are not a JSON object")
    assert unknown == "Error: there is no tool named 'nothing'"
    assert [m["toolResult"]["toolResult"] for m in messages] == [bad, unknown]
    assert box.calls_made == 0


def test_tool_service_request_ids_use_only_its_alphabet() -> None:
    assert tool_request_id("a_b-C9") == "task-a.b-C9"


def test_agent_limits_are_read_from_the_environment() -> None:
    limits = AgentLimits.from_env({"AGENT_MAX_STEPS": "4", "AGENT_MAX_TOOL_CALLS": "7"})
    assert (limits.max_steps, limits.max_tool_calls) == (4, 7)
    assert AgentLimits.from_env({}) == AgentLimits()
    with pytest.raises(ValueError, match="AGENT_MAX_STEPS"):
        AgentLimits.from_env({"AGENT_MAX_STEPS": "0"})


def test_the_builtin_agents_are_registered_as_relay_1_plan_3_and_react_5() -> None:
    registry = TaskRegistry()
    register_builtin_agents(registry)
    assert registry.agent_types == [1, 3, 5]


def test_echo_is_registered_too_when_its_pace_is_given() -> None:
    registry = TaskRegistry()
    register_builtin_agents(registry, echo_token_delay_ms=0)
    assert registry.agent_types == [0, 1, 3, 5]
