"""Text helpers of the stub's scripted answers: message text, numbers, titles, programs."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "arithmetic",
    "count_words",
    "find_numbers",
    "message_text",
    "python_program",
    "snippet",
    "title_of",
]

_WORD = re.compile(r"\S+")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?\b")
_OPERAND = r"[(\s]*-?\d+(?:\.\d+)?[)\s]*"
_EXPRESSION = re.compile(rf"{_OPERAND}(?:(?:\*\*|[-+*/%\u00d7\u00f7^])\s*{_OPERAND})+")
_OPERATORS = str.maketrans({"\u00d7": "*", "\u00f7": "/", "^": "**"})  # times, divided by


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message: a string content, or the text parts of a list content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
        return "\n".join(str(p) for p in parts if p)
    return ""


def count_words(text: str) -> int:
    """Whitespace-separated words: the stub's notion of a token."""
    return len(_WORD.findall(text))


def find_numbers(text: str) -> list[int | float]:
    """The numbers written in ``text``, in order (integers stay integers)."""
    found: list[int | float] = []
    for raw in _NUMBER.findall(text):
        found.append(float(raw) if "." in raw else int(raw))
    return found


def snippet(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def title_of(text: str, words: int = 8) -> str:
    """A short title: the first ``words`` words, without trailing punctuation."""
    title = " ".join(text.split()[:words]).rstrip(" .,;:!?")
    return title or "Untitled task"


def arithmetic(text: str) -> str | None:
    """The first arithmetic expression written in ``text`` (``17 * 23``, ``(2 + 3) ^ 2``), in
    Python's notation; None when there is none."""
    for match in _EXPRESSION.finditer(text):
        expression = " ".join(match.group().translate(_OPERATORS).split())
        while expression.count("(") > expression.count(")") and expression.startswith("("):
            expression = expression[1:].lstrip()
        while expression.count(")") > expression.count("(") and expression.endswith(")"):
            expression = expression[:-1].rstrip()
        try:
            ast.parse(expression, mode="eval")
        except SyntaxError:
            continue
        return expression
    return None


def python_program(task: str) -> str:
    """A small deterministic Python program derived from ``task``.

    With an arithmetic expression in the task it computes and prints it (``17 * 23 = 391``);
    with other numbers it prints them, their sum and their mean; otherwise it counts the words
    of the task. String literals are written with ``repr`` so the program always compiles.
    """
    numbers = find_numbers(task)
    expression = arithmetic(task)
    lines = [f"# Task: {snippet(task, 80)}"]
    if expression is not None:
        lines += [f"result = {expression}", f"print({expression + ' ='!r}, result)"]
    elif numbers:
        lines += [
            f"numbers = {numbers!r}",
            "total = sum(numbers)",
            'print("numbers:", numbers)',
            'print("sum:", total)',
            'print("mean:", total / len(numbers))',
        ]
    else:
        lines += [
            f"text = {snippet(task, 200)!r}",
            "words = text.split()",
            'print("words:", len(words))',
            'print("longest:", max(words, key=len) if words else "")',
        ]
    return "\n".join(lines) + "\n"
