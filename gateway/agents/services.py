"""The long-lived upstream clients the agents share, opened once for the app's lifetime.

```
async with agent_services(settings.upstream, public_url=settings.public_url) as services:
    manager = TaskManager(store, registry, settings, services=services)
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gateway.agents._builtin import builtin_tools
from gateway.agents._mcp import discover_mcp_tools
from gateway.agents.files import DEFAULT_PUBLIC_URL, FileLinks
from gateway.agents.limits import AgentLimits
from gateway.agents.tools import ToolBox, tool_request_id
from gateway.tasks.context import TaskContext, TaskFailure
from gateway.upstream import ChatClient, McpBridgeClient, ToolServiceClient, UpstreamSettings

__all__ = ["AgentDeps", "agent_services", "build_toolbox"]


@asynccontextmanager
async def agent_services(
    settings: UpstreamSettings,
    limits: AgentLimits | None = None,
    *,
    public_url: str = DEFAULT_PUBLIC_URL,
) -> AsyncIterator[dict[str, Any]]:
    """Open one ChatClient, ToolServiceClient and McpBridgeClient; close them all on exit.

    Yields the mapping to pass as ``TaskContext.services``: keys ``chat``, ``tools``, ``mcp``,
    ``upstream`` (the settings), ``limits`` (``AgentLimits.from_env()`` unless given) and
    ``public_url`` (the gateway's own public URL, which the links to task files start with).
    """
    limits = limits if limits is not None else AgentLimits.from_env()
    async with AsyncExitStack() as stack:
        chat = await stack.enter_async_context(ChatClient(settings))
        tools = await stack.enter_async_context(ToolServiceClient(settings))
        mcp = await stack.enter_async_context(McpBridgeClient(settings))
        yield {
            "chat": chat,
            "tools": tools,
            "mcp": mcp,
            "upstream": settings,
            "limits": limits,
            "public_url": public_url.rstrip("/"),
        }


@dataclass(frozen=True, slots=True)
class AgentDeps:
    """The services one agent run uses, taken from its ``TaskContext``."""

    chat: ChatClient
    tools: ToolServiceClient
    mcp: McpBridgeClient
    upstream: UpstreamSettings
    limits: AgentLimits
    public_url: str = DEFAULT_PUBLIC_URL

    @classmethod
    def of(cls, ctx: TaskContext) -> AgentDeps:
        """The services of ``ctx``; a gateway started without ``agent_services`` fails the task."""
        return cls.from_mapping(ctx.services)

    @classmethod
    def from_mapping(cls, services: Mapping[str, Any]) -> AgentDeps:
        """Build from an ``agent_services`` mapping (``limits`` and ``public_url`` may be
        missing)."""
        try:
            return cls(
                chat=services["chat"],
                tools=services["tools"],
                mcp=services["mcp"],
                upstream=services["upstream"],
                limits=services.get("limits") or AgentLimits(),
                public_url=services.get("public_url") or DEFAULT_PUBLIC_URL,
            )
        except KeyError as exc:
            raise TaskFailure(
                "internal", f"the agent service {exc.args[0]!r} is not configured"
            ) from None


async def build_toolbox(ctx: TaskContext, deps: AgentDeps) -> ToolBox:
    """The tools of one task: the built-in ones and those the MCP servers list right now."""
    builtin = builtin_tools(deps.tools)
    mcp_tools = await discover_mcp_tools(
        deps.mcp,
        deps.upstream.mcp_server_urls,
        taken=[tool.name for tool in builtin],
        timeout=deps.limits.mcp_list_timeout,
    )
    return ToolBox(
        tools=[*builtin, *mcp_tools],
        printer=ctx.printer,
        request_id=tool_request_id(ctx.task_id),
        limits=deps.limits,
        tool_timeout=deps.upstream.tool_timeout,
        links=FileLinks(deps.public_url, ctx.task_id),
    )
