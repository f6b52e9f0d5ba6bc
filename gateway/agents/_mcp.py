"""Tools of the configured MCP servers (``MCP_SERVER_URLS``), called through the MCP client service.

Each task lists the servers' tools afresh (the bridge caches the lists briefly), so a server
that gains a tool offers it to the next task. A tool keeps its own name when no other tool has
it; otherwise it is called ``<server-slug>__<tool>``. A server that cannot be listed is logged
and left out: the task goes on with the other tools.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio

from gateway.agents.tools import ToolInvocation, ToolOutcome
from gateway.upstream import McpBridgeClient, McpTool, UpstreamError

__all__ = ["McpServerTool", "discover_mcp_tools", "server_slug"]

logger = logging.getLogger(__name__)

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_NAME = 64  # the OpenAI limit for a function name


def server_slug(url: str) -> str:
    """A short name-safe label of a server URL: host, port and path (``127_0_0_1_8123_mcp``)."""
    parts = urlsplit(url)
    slug = _NAME_UNSAFE.sub("_", f"{parts.hostname or ''}_{parts.port or ''}{parts.path}")
    return re.sub(r"_+", "_", slug).strip("_") or "mcp"


def _safe(name: str) -> str:
    return _NAME_UNSAFE.sub("_", name)[:_MAX_NAME] or "tool"


class McpServerTool:
    """One tool of one MCP server, under the name the model calls it by."""

    def __init__(self, client: McpBridgeClient, server_url: str, tool: McpTool, name: str) -> None:
        self._client = client
        self.server_url = server_url
        self.tool = tool
        self.name = name

    def schema(self) -> dict[str, Any]:
        return self.tool.to_openai_tool(self.name)

    async def run(self, call: ToolInvocation) -> ToolOutcome:
        result = await self._client.call_tool(self.server_url, self.tool.name, call.arguments)
        return ToolOutcome(result.text, is_error=result.is_error)


async def _list(
    client: McpBridgeClient, url: str, timeout: float, found: dict[str, list[McpTool]]
) -> None:
    try:
        with anyio.fail_after(timeout):
            found[url] = await client.list_tools(url)
    except TimeoutError:
        logger.warning("MCP server %s did not list its tools in %s s; skipped", url, timeout)
    except UpstreamError as exc:
        logger.warning("MCP server %s could not list its tools (%s); skipped", url, exc.message)


async def discover_mcp_tools(
    client: McpBridgeClient,
    server_urls: Sequence[str],
    *,
    taken: Collection[str] = (),
    timeout: float = 10.0,
) -> list[McpServerTool]:
    """The tools of every server in ``server_urls``, listed concurrently, named uniquely.

    ``taken`` are names already in use (the built-in tools): an MCP tool with such a name is
    prefixed with its server's slug.
    """
    found: dict[str, list[McpTool]] = {}
    async with anyio.create_task_group() as group:
        for url in dict.fromkeys(server_urls):
            group.start_soon(_list, client, url, timeout, found)
    listed = [(url, tool) for url in dict.fromkeys(server_urls) for tool in found.get(url, ())]
    counts = Counter(_safe(tool.name) for _, tool in listed)
    counts.update(set(taken))
    used = set(taken)
    tools = []
    for url, tool in listed:
        name = _safe(tool.name)
        if counts[name] > 1:
            name = _safe(f"{server_slug(url)}__{tool.name}")
        if name in used:
            logger.warning("MCP tool %s of %s has a duplicate name; skipped", tool.name, url)
            continue
        used.add(name)
        tools.append(McpServerTool(client, url, tool, name))
    return tools
