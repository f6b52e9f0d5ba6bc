"""The built-in agents and the tool layer they share.

```
registry = TaskRegistry()
register_builtin_agents(registry)   # 1 relay, 3 plan-and-execute, 5 ReAct (0 echo on request)
async with agent_services(settings.upstream) as services:
    ...                             # services → TaskContext.services
```
"""

from __future__ import annotations

from gateway.agents.limits import AgentLimits
from gateway.agents.plan_execute import plan_execute_agent
from gateway.agents.react import react_agent
from gateway.agents.relay import relay_agent
from gateway.agents.services import agent_services
from gateway.agents.tools import Tool, ToolBox, ToolInvocation, ToolOutcome
from gateway.tasks.context import TaskRegistry

__all__ = [
    "AgentLimits",
    "Tool",
    "ToolBox",
    "ToolInvocation",
    "ToolOutcome",
    "agent_services",
    "plan_execute_agent",
    "react_agent",
    "register_builtin_agents",
    "relay_agent",
]

ECHO = 0
RELAY = 1
PLAN_AND_EXECUTE = 3
REACT = 5


def register_builtin_agents(
    registry: TaskRegistry, *, echo_token_delay_ms: float | None = None
) -> None:
    """Register relay (1), plan-and-execute (3) and ReAct (5); with ``echo_token_delay_ms`` also
    echo (0)."""
    if echo_token_delay_ms is not None:
        from gateway.agents.echo import make_echo_agent

        registry.register(ECHO, make_echo_agent(echo_token_delay_ms), name="echo")
    registry.register(RELAY, relay_agent, name="relay")
    registry.register(PLAN_AND_EXECUTE, plan_execute_agent, name="plan_and_execute")
    registry.register(REACT, react_agent, name="react")
