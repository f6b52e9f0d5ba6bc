"""The system prompts of the agents.

Each starts with a role marker (``[agw:planner]`` …): a real model reads it as a harmless tag,
and ``llm_stub`` uses it to pick its deterministic behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.protocol import AgentRequest

__all__ = ["executor_prompt", "planner_prompt", "react_prompt", "summary_prompt", "user_query"]

_TOOLS_RULES = (
    "Use the tools when they help; call one tool at a time and read its result before the "
    "next step. When you have what you need, answer without calling a tool."
)


def user_query(request: AgentRequest) -> str:
    """The user's message: the query, and the files handed to the task, if any."""
    if not request.files:
        return request.query
    lines = []
    for ref in request.files:
        line = f"- {ref.file_name}" + (f" ({ref.url})" if ref.url else "")
        lines.append(line + (f": {ref.description}" if ref.description else ""))
    listed = "\n".join(lines)
    return f"{request.query}\n\nAttached files:\n{listed}"


def react_prompt() -> str:
    """The ReAct agent: think, act with tools, observe, and answer."""
    return f"[agw:react] You are a capable assistant that solves the user's task. {_TOOLS_RULES}"


def planner_prompt() -> str:
    """The planner: split the task into a few concrete steps with the ``planning`` tool."""
    return (
        "[agw:planner] You plan work for other agents. Think briefly about the task, then call "
        "the planning tool once with command 'create', a short title and 2-5 concrete steps, "
        "each one sentence that an agent with tools (code, search, reports, MCP tools) can do."
    )


def executor_prompt(query: str, steps: Sequence[str], done: Sequence[tuple[str, str]]) -> str:
    """The executor of one plan step, told the whole task and what earlier steps found."""
    plan = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))
    earlier = "\n".join(f"- {step}: {result}" for step, result in done) or "- (none yet)"
    return (
        f"[agw:executor] You carry out one step of a plan. {_TOOLS_RULES} End with a short "
        f"summary of what the step found.\n\nThe overall task: {query}\n\nThe plan:\n{plan}\n\n"
        f"Results of the earlier steps:\n{earlier}"
    )


def summary_prompt() -> str:
    """The final summary of a plan-and-execute run."""
    return (
        "[agw:summary] Write the final answer to the user's task in markdown, based on the "
        "results of the steps that were carried out. Be concise and cite files by name."
    )
