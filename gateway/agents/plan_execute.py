"""The plan-and-execute agent (``agentType: 3``): plan, carry out each step, summarise.

Messages, in order: ``plan_thought`` (the planner's thinking, streamed) and the ``plan``; per
step a ``plan`` update (``in_progress``), the ``task`` (the step), the executor's turns (their
text streamed live as ``tool_thought`` deltas, each ending as ``tool_thought`` before tool
calls / tool messages / ``tool_result``, or as the step's ``task_summary``) and a ``plan``
update (``completed``); finally the summary, streamed live as ``agent_stream``, which becomes
the task's result with the files the tools wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.agents._loop import converse, run_tool_loop
from gateway.agents.prompts import executor_prompt, planner_prompt, summary_prompt, user_query
from gateway.agents.services import AgentDeps, build_toolbox
from gateway.printer import Printer
from gateway.tasks.context import TaskContext
from gateway.upstream import ChatClient, ChatResult, UpstreamError

__all__ = ["Plan", "plan_execute_agent"]

_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.+?)\s*$", re.MULTILINE)
_NOTE_CHARS = 300
PLANNING_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "planning",
        "description": "Create the plan: a short title and the ordered steps.",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "enum": ["create"]},
                "title": {"type": "string", "description": "a short title of the task"},
                "steps": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            },
            "required": ["command", "title", "steps"],
        },
    },
}


@dataclass(slots=True)
class Plan:
    """The plan as the ``plan`` message shows it."""

    title: str
    steps: list[str]
    step_status: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.step_status = self.step_status or ["not_started"] * len(self.steps)
        self.notes = self.notes or [""] * len(self.steps)

    def to_json(self) -> dict[str, Any]:
        """The ``plan`` payload ``{title, steps, stepStatus, notes}`` (copies, so a printed
        message never changes afterwards)."""
        return {
            "title": self.title,
            "steps": list(self.steps),
            "stepStatus": list(self.step_status),
            "notes": list(self.notes),
        }


def _plan_from(result: ChatResult, query: str, max_steps: int) -> Plan:
    """The plan of the planner's ``planning`` call; else its numbered lines; else one step."""
    title = " ".join(query.split()[:8]).rstrip(" .,;:!?") or "Task"
    steps: list[str] = []
    for call in result.tool_calls:
        if call.name != "planning":
            continue
        try:
            arguments = call.parsed_arguments()
        except UpstreamError:
            continue
        raw = arguments.get("steps")
        steps = [str(s).strip() for s in raw if str(s).strip()] if isinstance(raw, list) else []
        title = str(arguments.get("title") or title)
        if steps:
            break
    if not steps:
        steps = [s for s in _NUMBERED.findall(result.content) if s.strip()] or [query]
    return Plan(title, steps[:max_steps])


async def _make_plan(
    chat: ChatClient, printer: Printer, query: str, request_text: str, max_steps: int
) -> Plan:
    messages = [
        {"role": "system", "content": planner_prompt()},
        {"role": "user", "content": request_text},
    ]
    result = await converse(
        chat, printer, messages, [PLANNING_TOOL], thought="plan_thought", answer="plan_thought"
    )
    return _plan_from(result, query, max_steps)


async def plan_execute_agent(ctx: TaskContext) -> None:
    """Plan ``ctx.request``, run each step with an executor tool loop, then summarise."""
    deps = AgentDeps.of(ctx)
    printer = ctx.printer
    query = ctx.request.query
    request_text = user_query(ctx.request)
    max_steps = deps.limits.max_steps
    toolbox = await build_toolbox(ctx, deps)
    plan = await _make_plan(deps.chat, printer, query, request_text, max_steps)
    await printer.send("plan", plan.to_json())
    done: list[tuple[str, str]] = []
    for index, step in enumerate(plan.steps):
        plan.step_status[index] = "in_progress"
        await printer.send("plan", plan.to_json())
        await printer.send("task", step)
        messages = [
            {"role": "system", "content": executor_prompt(request_text, plan.steps, done)},
            {"role": "user", "content": step},
        ]
        summary = await run_tool_loop(
            deps.chat, toolbox, messages, max_steps=max_steps, answer="task_summary"
        )
        done.append((step, summary))
        plan.step_status[index] = "completed"
        plan.notes[index] = summary if len(summary) <= _NOTE_CHARS else summary[:_NOTE_CHARS] + "…"
        await printer.send("plan", plan.to_json())
    messages = [{"role": "system", "content": summary_prompt()}]
    messages += [
        {"role": "assistant", "content": f"Step {i}: {step}\nResult: {result}"}
        for i, (step, result) in enumerate(done, 1)
    ]
    messages.append({"role": "user", "content": request_text})
    final = await converse(
        deps.chat, printer, messages, thought="agent_stream", answer="agent_stream"
    )
    printer.result(final.content, task_summary=final.content, file_list=toolbox.files)
