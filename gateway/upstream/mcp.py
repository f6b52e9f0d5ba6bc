"""A client for the MCP client service (``mcp_client``, JoyAgent's genie-client).

``POST /v1/tool/list {server_url}`` and ``POST /v1/tool/call {server_url, name, arguments}``
answer ``{code, message, data}``; a ``code`` other than 200 is an error, whatever the HTTP status.
A tool that ran but failed (``isError: true``) is not an exception: the model should see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from gateway.upstream._http import Deadline, OwnedHttp, http_error
from gateway.upstream.errors import UpstreamProtocolError, UpstreamRemoteError, from_httpx
from gateway.upstream.settings import UpstreamSettings

__all__ = ["McpBridgeClient", "McpTool", "McpToolResult"]


@dataclass(frozen=True, slots=True)
class McpTool:
    """A tool an MCP server offers."""

    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> McpTool:
        """Build from an MCP ``Tool`` object (``inputSchema`` camelCase)."""
        return cls(
            name=str(data.get("name") or ""),
            description=str(data.get("description") or ""),
            input_schema=dict(data.get("inputSchema") or {"type": "object", "properties": {}}),
            annotations=data.get("annotations"),
        )

    def to_openai_tool(self, name: str | None = None) -> dict[str, Any]:
        """An OpenAI ``tools`` entry for this tool, optionally under another (prefixed) name."""
        return {
            "type": "function",
            "function": {
                "name": name or self.name,
                "description": self.description,
                "parameters": dict(self.input_schema),
            },
        }


@dataclass(frozen=True, slots=True)
class McpToolResult:
    """An MCP ``CallToolResult``: content parts and whether the tool itself failed."""

    content: tuple[Mapping[str, Any], ...]
    is_error: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The text parts joined with newlines (other parts as compact JSON)."""
        parts = []
        for part in self.content:
            if part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                parts.append(orjson.dumps(part).decode())
        return "\n".join(parts)


class McpBridgeClient(OwnedHttp):
    """Lists and calls MCP tools through the MCP client service."""

    def __init__(
        self, settings: UpstreamSettings, *, http: httpx.AsyncClient | None = None
    ) -> None:
        self._settings = settings
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.tool_timeout, connect=settings.tool_connect_timeout)
        )
        self._base = settings.mcp_client_url.rstrip("/")

    async def ping(self, server_url: str) -> None:
        """Check that the MCP server answers (``/v1/serv/pong``); raise if it does not."""
        await self._post("/v1/serv/pong", {"server_url": server_url}, "MCP pong")

    async def list_tools(self, server_url: str) -> list[McpTool]:
        """The tools the MCP server at ``server_url`` offers."""
        data = await self._post("/v1/tool/list", {"server_url": server_url}, "MCP tool list")
        if isinstance(data, Mapping):  # tolerate a ListToolsResult object as well as the list
            data = data.get("tools")
        if not isinstance(data, list):
            raise UpstreamProtocolError("MCP tool list: data is not a list of tools")
        return [McpTool.from_dict(t) for t in data if isinstance(t, Mapping) and t.get("name")]

    async def call_tool(
        self, server_url: str, name: str, arguments: Mapping[str, Any] | None = None
    ) -> McpToolResult:
        """Call tool ``name`` with ``arguments`` on the MCP server at ``server_url``."""
        payload = {"server_url": server_url, "name": name, "arguments": dict(arguments or {})}
        data = await self._post("/v1/tool/call", payload, f"MCP tool {name}")
        if not isinstance(data, Mapping):
            raise UpstreamProtocolError(f"MCP tool {name}: data is not a CallToolResult")
        content = tuple(p for p in data.get("content") or () if isinstance(p, Mapping))
        return McpToolResult(content, bool(data.get("isError")), data)

    async def _post(self, path: str, payload: Mapping[str, Any], what: str) -> Any:
        deadline = Deadline(self._settings.tool_timeout, what)
        try:
            with deadline.limit():
                response = await self._http.post(
                    self._base + path,
                    content=orjson.dumps(payload),
                    headers={"content-type": "application/json", **self._settings.service_headers},
                )
        except httpx.HTTPError as exc:
            raise from_httpx(exc, what) from exc
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, Mapping) or "code" not in body:
            if response.status_code >= 400:
                raise http_error(response, response.content, what)
            raise UpstreamProtocolError(
                f"{what}: the answer is not a {{code, message, data}} object"
            )
        if str(body["code"]) != "200":
            raise UpstreamRemoteError(
                f"{what}: {body.get('message') or 'failed'} (code {body['code']})",
                upstream_status=response.status_code,
                detail=body,
            )
        return body.get("data")
