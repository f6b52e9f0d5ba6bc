"""The stub's deterministic "model": what it answers, by prompt role and keywords.

The role is the first marker found in a system (or developer) message:

- ``[agw:planner]`` — a thought, then a ``planning`` tool call ``{"command": "create", "title",
  "steps"}`` with one step per tool category the query mentions, in order of appearance.
- ``[agw:executor]`` / ``[agw:react]`` — with ``tools``: a thought and ONE tool call chosen by the
  keywords of the last user message; after a tool result, ``Done: <result>`` (or, when the
  message asks for arithmetic and the code printed it, ``17 * 23 = 391``).
- ``[agw:summary]`` — a markdown summary of the query and the earlier messages.
- no marker — a fenced Python program when code is asked for, else ``You asked: …``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llm_stub._text import arithmetic, message_text, snippet, title_of
from llm_stub._tools import KEYWORDS, choose_tool, plain_answer, tool_arguments
from llm_stub.faults import strip_directives

__all__ = ["MARKERS", "MAX_TOOL_CALLS", "PlannedCall", "Reply", "plan_steps", "respond"]

MARKERS: Mapping[str, str] = {
    "[agw:planner]": "planner",
    "[agw:executor]": "executor",
    "[agw:react]": "react",
    "[agw:summary]": "summary",
}
MAX_TOOL_CALLS = 3
"""Executor and ReAct conversations never get more tool calls than this."""

_STEPS: Mapping[str, tuple[str, str]] = {
    "code": ("compute with code", "Write and run Python code to calculate: {q}"),
    "search": ("search for information", "Search for the latest information about: {q}"),
    "report": ("write a report", "Write a report document about: {q}"),
    "mcp": ("call the echo tool", "Call the echo tool with: {q}"),
}
"""Per tool category: the phrase of the planner's thought, and the step it plans."""
_GENERIC_STEPS = ("Analyse the request: {q}", "Write the final answer for: {q}")
_MAX_STEPS = 5


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A tool call the stub will make."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """The scripted answer: content (streamed first) and at most one tool call."""

    content: str
    tool_call: PlannedCall | None = None

    @property
    def finish_reason(self) -> str:
        """``tool_calls`` when a tool is called, else ``stop``."""
        return "tool_calls" if self.tool_call else "stop"


def plan_steps(query: str) -> list[str]:
    """One step per category mentioned, in order of first appearance; two generic steps if none."""
    return [step for _, step in _planned(query)]


def _planned(query: str) -> list[tuple[str, str]]:
    """(thought phrase, step) pairs for ``query``."""
    q = snippet(query, 100)
    found = []
    for kind, (phrase, template) in _STEPS.items():
        match = KEYWORDS[kind].search(query)
        if match:
            found.append((match.start(), phrase, template.format(q=q)))
    if not found:
        return [
            ("analyse the request", _GENERIC_STEPS[0].format(q=q)),
            ("write the final answer", _GENERIC_STEPS[1].format(q=q)),
        ]
    return [(phrase, step) for _, phrase, step in sorted(found)][:_MAX_STEPS]


def _role(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in messages:
        if message.get("role") in ("system", "developer"):
            text = message_text(message)
            hits = [(text.find(m), role) for m, role in MARKERS.items() if m in text]
            if hits:
                return min(hits)[1]
    return None


def _last_user(messages: Sequence[Mapping[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return -1


def _tool_names(tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    names = []
    for tool in tools or ():
        name = (tool.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            names.append(name)
    return names


def respond(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
) -> Reply:
    """The deterministic answer to a chat completion request."""
    last = _last_user(messages)
    query = strip_directives(message_text(messages[last])) if last >= 0 else ""
    after = messages[last + 1 :] if last >= 0 else messages
    tool_results = [message_text(m) for m in after if m.get("role") == "tool"]
    offered = [] if tool_choice == "none" else _tool_names(tools)
    role = _role(messages)
    if role == "planner":
        return _planner(query, offered, bool(tool_results))
    if role == "summary":
        return Reply(_summary(query, [m for i, m in enumerate(messages) if i != last]))
    if role in ("executor", "react") and offered:
        if tool_results:
            return Reply(_done(tool_results[-1], query))
        used = sum(len(m.get("tool_calls") or ()) for m in messages if m.get("role") == "assistant")
        name = choose_tool(query, offered, tool_choice)
        if name is None or used >= MAX_TOOL_CALLS:
            return Reply(plain_answer(query))
        arguments = tool_arguments(name, query, tools or ())
        thought = f"I will use {name} to work on: {snippet(query, 120)}"
        return Reply(thought, PlannedCall(name, arguments))
    return Reply(plain_answer(query))


def _planner(query: str, offered: list[str], replanning: bool) -> Reply:
    if replanning:
        return Reply("The plan is complete; no changes are needed.")
    title = title_of(query)
    planned = _planned(query)
    steps = [step for _, step in planned]
    phrases = [phrase for phrase, _ in planned]
    said = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    thought = f'To answer "{title}" I will {said}.'
    if "planning" not in offered:
        numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        return Reply(f"{thought}\n\n{numbered}")
    return Reply(
        thought, PlannedCall("planning", {"command": "create", "title": title, "steps": steps})
    )


def _done(result: str, query: str) -> str:
    """The answer after a tool result: the value of the query's arithmetic where the tool
    printed it (``17 * 23 = 391``), else ``Done: <result>``."""
    expression = arithmetic(query)
    if expression is not None:
        printed = re.search(rf"^{re.escape(expression)} = (\S+)\s*$", result, re.MULTILINE)
        if printed:
            return f"{expression} = {printed.group(1)}"
    text = result.strip()
    return "Done: " + (text if len(text) <= 200 else text[:200].rstrip() + "…")


def _summary(query: str, earlier: Sequence[Mapping[str, Any]]) -> str:
    title = title_of(query)
    findings = [
        f"- {snippet(text, 160)}"
        for m in earlier
        if m.get("role") not in ("system", "developer") and (text := message_text(m).strip())
    ][:8]
    lines = [f"## Summary: {title}", "", f"You asked: {snippet(query, 300)}", "", "### Findings"]
    lines += findings or ["- No intermediate results were recorded."]
    lines += ["", "### Conclusion", f'Completed "{title}" using {len(findings)} earlier result(s).']
    return "\n".join(lines) + "\n"
