"""The tool service (port 1601): JoyAgent-compatible streaming tools.

``code_interpreter`` (sandboxed Python), ``deepsearch`` (BM25 corpus + SearXNG, cited answers),
``report`` (markdown/HTML from the LLM) and the file tool, each answering SSE frames
(``data: <json>``, ``data: heartbeat``, ``data: [DONE]``) or plain JSON. It imports nothing from
``gateway``. Run it with ``agent-gateway serve tool_service``.
"""

from .app import create_app
from .errors import ToolServiceError
from .settings import LLMSettings, SandboxSettings, Settings

__all__ = ["LLMSettings", "SandboxSettings", "Settings", "ToolServiceError", "create_app"]
