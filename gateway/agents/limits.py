"""The limits every agent run obeys: model turns, tool calls, tool output the model sees.

The per-tool time limit is :attr:`UpstreamSettings.tool_timeout` (``TOOL_TIMEOUT``); the limits
here come from ``AGENT_MAX_STEPS`` and ``AGENT_MAX_TOOL_CALLS``, read once by ``agent_services``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway._env import env_int

__all__ = ["AgentLimits"]


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    return env_int(env, name, default, minimum=1)


@dataclass(frozen=True, slots=True)
class AgentLimits:
    """How far one task may go.

    ``max_steps`` bounds the model turns of one tool loop (a ReAct run, or one plan step) and the
    number of plan steps; its last turn may not call tools, so a loop always ends with an answer.
    ``max_tool_calls`` bounds the tool calls of a whole task. ``tool_result_chars`` cuts the tool
    output fed back to the model (the messages shown to the user are not cut).
    ``mcp_list_timeout`` bounds the discovery of one MCP server's tools.
    """

    max_steps: int = 10
    max_tool_calls: int = 20
    tool_result_chars: int = 8_000
    mcp_list_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_tool_calls < 1 or self.tool_result_chars < 1:
            raise ValueError("agent limits must be positive")
        if self.mcp_list_timeout <= 0:
            raise ValueError("mcp_list_timeout must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentLimits:
        """Read ``AGENT_MAX_STEPS`` and ``AGENT_MAX_TOOL_CALLS``; bad values raise ValueError."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            max_steps=_positive_int(env, "AGENT_MAX_STEPS", defaults.max_steps),
            max_tool_calls=_positive_int(env, "AGENT_MAX_TOOL_CALLS", defaults.max_tool_calls),
        )
