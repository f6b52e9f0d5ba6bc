"""The ReAct agent (``agentType: 5``): think, call tools, observe — until it can answer.

Messages: each model turn's text streams live as ``tool_thought`` deltas under one messageId;
its final frame is ``tool_thought`` when tool calls followed (then the tools' own messages and
``tool_result``), or ``agent_stream`` when the turn is the answer, which becomes the task's
result.
"""

from __future__ import annotations

from gateway.agents._loop import run_tool_loop
from gateway.agents.prompts import react_prompt, user_query
from gateway.agents.services import AgentDeps, build_toolbox
from gateway.tasks.context import TaskContext

__all__ = ["react_agent"]


async def react_agent(ctx: TaskContext) -> None:
    """Run one ReAct conversation for ``ctx.request`` and record its answer."""
    deps = AgentDeps.of(ctx)
    toolbox = await build_toolbox(ctx, deps)
    messages = [
        {"role": "system", "content": react_prompt()},
        {"role": "user", "content": user_query(ctx.request)},
    ]
    answer = await run_tool_loop(
        deps.chat, toolbox, messages, max_steps=deps.limits.max_steps, answer="agent_stream"
    )
    ctx.printer.result(answer, task_summary=answer, file_list=toolbox.files)
