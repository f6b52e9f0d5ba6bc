"""Keyword rules of the stub: which tool a text asks for, and the arguments to call it with."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from llm_stub._text import count_words, find_numbers, python_program, snippet

__all__ = ["BUILTIN_TOOLS", "KEYWORDS", "choose_tool", "plain_answer", "tool_arguments"]

KEYWORDS: Mapping[str, re.Pattern[str]] = {
    "code": re.compile(r"\b(?:codes?|calculat\w*|comput\w*|python|csv|plot\w*|sums?)\b", re.I),
    "search": re.compile(
        r"\b(?:search\w*|research\w*|find(?:s|ing)?|look(?:ing)?\s+up|latest)\b", re.I
    ),
    "report": re.compile(r"\b(?:report\w*|write-?ups?|document\w*|summary\s+file)\b", re.I),
    "mcp": re.compile(r"\b(?:mcp|echo|add)\b", re.I),
}
"""Tool categories and the words that ask for them (``mcp`` has no tool of its own)."""

BUILTIN_TOOLS: Mapping[str, str] = {
    "code": "code_interpreter",
    "search": "deepsearch",
    "report": "report",
}
_CODE_REQUEST = re.compile(r"\b(?:python|code)\b", re.I)


def _name_position(name: str, text: str) -> int | None:
    """Where ``name``, or its last segment (``everything__echo`` → ``echo``), appears as a word."""
    aliases = {name, re.split(r"__|[./:]", name)[-1]}
    positions = [
        m.start()
        for alias in aliases
        if alias and (m := re.search(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", text, re.I))
    ]
    return min(positions) if positions else None


def choose_tool(text: str, offered: Sequence[str], tool_choice: Any = None) -> str | None:
    """The offered tool the text asks for: the earliest keyword or tool name wins.

    A ``tool_choice`` naming an offered function forces it.
    """
    if isinstance(tool_choice, Mapping):
        forced = (tool_choice.get("function") or {}).get("name")
        if forced in offered:
            return str(forced)
    candidates: list[tuple[int, int, str]] = []
    for order, (kind, tool) in enumerate(BUILTIN_TOOLS.items()):
        match = KEYWORDS[kind].search(text)
        if match and tool in offered:
            candidates.append((match.start(), order, tool))
    for order, name in enumerate(offered, start=len(BUILTIN_TOOLS)):
        position = _name_position(name, text)
        if position is not None:
            candidates.append((position, order, name))
    return min(candidates)[2] if candidates else None


def _schema_of(name: str, tools: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    for tool in tools:
        function = tool.get("function") or {}
        if function.get("name") == name:
            return function.get("parameters") or {}
    return {}


def tool_arguments(name: str, text: str, tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Arguments for ``name``: fixed shapes for the built-in tools, else built from its schema.

    Schema rule: strings get the text, numbers the numbers of the text in order (then 1, 2 …),
    booleans true, enums their first value, arrays ``[]`` and objects ``{}``.
    """
    if name == "code_interpreter":
        return {"task": text, "code": python_program(text)}
    if name == "deepsearch":
        return {"query": text}
    if name == "report":
        return {"task": text, "fileName": "report.md", "fileType": "markdown"}
    properties = _schema_of(name, tools).get("properties") or {}
    numbers = iter(find_numbers(text))
    fallback = 0
    arguments: dict[str, Any] = {}
    for param, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        kind = spec.get("type", "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if spec.get("enum"):
            arguments[param] = spec["enum"][0]
        elif kind in ("number", "integer"):
            fallback += 1
            value = next(numbers, fallback)
            arguments[param] = int(value) if kind == "integer" else value
        elif kind == "boolean":
            arguments[param] = True
        elif kind == "array":
            arguments[param] = []
        elif kind == "object":
            arguments[param] = {}
        else:
            arguments[param] = text
    return arguments


def plain_answer(text: str) -> str:
    """The answer without tools: a fenced Python program when code is asked for, else an echo."""
    if _CODE_REQUEST.search(text):
        return (
            "Here is a small Python program for your request:\n\n"
            f"```python\n{python_program(text)}```\n\nRun it to see the result.\n"
        )
    numbers = find_numbers(text)
    extra = f" The numbers in it add up to {sum(numbers)}." if numbers else ""
    return (
        f"You asked: {snippet(text, 300)}\n\n"
        f"This is a deterministic answer from the LLM stub: your message has "
        f"{count_words(text)} words.{extra}\n"
    )
