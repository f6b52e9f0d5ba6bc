"""The echo agent (``agentType: 0``): deterministic, no LLM — the smoke test and benchmark load."""

from __future__ import annotations

import asyncio

from gateway.tasks.context import Handler, TaskContext


def make_echo_agent(token_delay_ms: float) -> Handler:
    """An echo handler streaming one word every ``token_delay_ms`` milliseconds."""

    async def echo_agent(ctx: TaskContext) -> None:
        await run_echo(ctx, token_delay_ms / 1000.0)

    return echo_agent


async def run_echo(ctx: TaskContext, delay: float) -> None:
    """Plan → task → one ``agent_stream`` delta per word → final frame → ``result``."""
    printer = ctx.printer
    query = ctx.request.query
    words = query.split()
    plan = {
        "title": "Echo",
        "steps": ["Echo the query"],
        "stepStatus": ["in_progress"],
        "notes": [],
    }
    await printer.send("plan", plan)
    await printer.send("task", "Echo the query")
    answer = printer.stream("agent_stream")
    for index, word in enumerate(words):
        if delay > 0:
            await asyncio.sleep(delay)
        await answer.delta(word if index == 0 else " " + word)
    text = " ".join(words)
    await answer.final(text)
    await printer.send("plan", {**plan, "stepStatus": ["completed"]})
    await printer.send("task_summary", text)
    printer.result(text, task_summary=text)
