"""Scripted agents that print DESIGN §3's live-text messages, for the JoyAgent UI tests.

Each model turn streams under one ``messageId`` as non-final ``tool_thought`` frames, one word
every ``WORD_DELAY`` seconds (as a model writes), and its final frame names what the text was:
``tool_thought`` before a tool call, the answer type otherwise (``agent_stream`` for ReAct's
answer and the plan's summary, ``task_summary`` for a plan step's answer). They let the tests
drive JoyAgent's UI with these messages whatever the built-in agents print today.
"""

from __future__ import annotations

import re
import uuid

import anyio

from gateway.printer import Printer
from gateway.tasks import TaskContext, TaskRegistry

__all__ = ["ANSWER", "STEP_ANSWER", "SUMMARY", "register_contract_agents"]

WORD_DELAY = 0.04
THOUGHT = "I will look the word up before I answer."
ANSWER = "The word means a small live stream of text, written one piece at a time."
STEP_ANSWER = "The step is done: the word was looked up and explained."
SUMMARY = "Summary: the word was looked up, and its meaning is a small live stream of text."


async def _turn(printer: Printer, text: str, final_type: str) -> None:
    """One model turn: its words as ``tool_thought`` deltas, then its final frame."""
    message_id = uuid.uuid4().hex
    for piece in re.findall(r"\S+\s*", text):
        await printer.send("tool_thought", piece, message_id=message_id, is_final=False)
        await anyio.sleep(WORD_DELAY)
    await printer.send(final_type, text, message_id=message_id, is_final=True)


async def _tool(printer: Printer) -> None:
    await printer.send(
        "tool_result", {"toolName": "lookup", "toolParam": {"word": "stream"}, "toolResult": "ok"}
    )


async def contract_react(ctx: TaskContext) -> None:
    """ReAct: a thought and a tool call when the query says "tool", then the answer."""
    if "tool" in ctx.request.query:
        await _turn(ctx.printer, THOUGHT, "tool_thought")
        await _tool(ctx.printer)
    await _turn(ctx.printer, ANSWER, "agent_stream")
    ctx.printer.result(ANSWER, task_summary=ANSWER)


async def contract_plan(ctx: TaskContext) -> None:
    """Plan-and-execute: the planner's thought and plan, one step (a thought, a tool call, the
    step's answer), the summary."""
    printer = ctx.printer
    plan = {"title": "Look it up", "steps": ["Look the word up"], "notes": [""]}
    planner = printer.stream("plan_thought")
    for piece in re.findall(r"\S+\s*", "I will plan one step: look the word up."):
        await planner.delta(piece)
        await anyio.sleep(WORD_DELAY)
    await planner.final("I will plan one step: look the word up.")
    await printer.send("plan", {**plan, "stepStatus": ["not_started"]})
    await printer.send("plan", {**plan, "stepStatus": ["in_progress"]})
    await printer.send("task", "Look the word up")
    await _turn(printer, THOUGHT, "tool_thought")
    await _tool(printer)
    await _turn(printer, STEP_ANSWER, "task_summary")
    await printer.send("plan", {**plan, "stepStatus": ["completed"]})
    await _turn(printer, SUMMARY, "agent_stream")
    printer.result(SUMMARY, task_summary=SUMMARY)


def register_contract_agents(registry: TaskRegistry) -> None:
    """Register the scripted agents as plan-and-execute (3) and ReAct (5)."""
    registry.register(3, contract_plan, name="contract_plan")
    registry.register(5, contract_react, name="contract_react")
