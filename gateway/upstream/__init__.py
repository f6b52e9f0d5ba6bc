"""Clients of the gateway's upstreams: the LLM, the tool service and the MCP client service.

They depend on httpx, httptools, orjson, anyio and the standard library only, and raise
:class:`UpstreamError` subclasses only (see :mod:`gateway.upstream.errors`). The LLM stream's
HTTP/1.1 client (:class:`WirePool`, its :class:`WireConnection`, a :class:`Target` URL and a
:class:`Deadline`) is public for the benchmarks that drive it directly (``bench.chain``,
``bench.ingest``).

```
settings = UpstreamSettings.from_env()
async with ChatClient(settings) as chat:
    async with aclosing(chat.stream_chat(messages, tools)) as events:
        async for event in events:   # ContentDelta | ToolCallDelta | ChatResult (last)
            ...
```
"""

from gateway.upstream._http import Deadline
from gateway.upstream._wire import Target, WireConnection, WirePool
from gateway.upstream.chat import (
    ChatEvent,
    ChatResult,
    ContentDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from gateway.upstream.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRemoteError,
    UpstreamTimeout,
)
from gateway.upstream.mcp import McpBridgeClient, McpTool, McpToolResult
from gateway.upstream.openai import ChatClient
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.sse import ServerSentEvent, SSEDecoder, aiter_sse
from gateway.upstream.tools import ToolFile, ToolServiceClient

__all__ = [
    "ChatClient",
    "ChatEvent",
    "ChatResult",
    "ContentDelta",
    "Deadline",
    "McpBridgeClient",
    "McpTool",
    "McpToolResult",
    "SSEDecoder",
    "ServerSentEvent",
    "Target",
    "ToolCall",
    "ToolCallDelta",
    "ToolFile",
    "ToolServiceClient",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamRemoteError",
    "UpstreamSettings",
    "UpstreamTimeout",
    "Usage",
    "WireConnection",
    "WirePool",
    "aiter_sse",
]
