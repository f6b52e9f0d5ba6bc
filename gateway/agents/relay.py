"""The relay agent (``agentType: 1``): one streamed chat completion, token by token, to the log.

No tools, no planning: the user's query goes to the LLM (``ctx.services["chat"]``) and every
content delta becomes a non-final ``agent_stream`` frame; the final frame carries the full
answer, which is also the task's result. It is the plainest "stream an LLM through the gateway"
workload, and the one ``bench`` measures.

The deltas are appended from the upstream connection's read callback (``ChatClient.stream_text``
and ``Printer.text_delta_now``): no task wakes per token. A store that cannot append without waiting
gets them through a chain of tasks instead, in order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import anyio

from gateway.store import StoreError
from gateway.tasks.context import TaskContext, TaskFailure
from gateway.upstream import ChatClient

__all__ = ["relay_agent"]

FINAL_TIMEOUT = 2.0
"""Seconds the final frame of an interrupted answer may take before it is given up."""


async def relay_agent(ctx: TaskContext) -> None:
    """Stream the answer to ``ctx.request.query`` as ``agent_stream`` deltas, then the full text."""
    chat: ChatClient | None = ctx.services.get("chat")
    if chat is None:
        raise TaskFailure("internal", "the agent service 'chat' is not configured")
    printer = ctx.printer
    delta_now = printer.text_delta_now
    message_id = uuid.uuid4().hex
    parts: list[str] = []
    chained: asyncio.Future[None] | None = None  # the last delta that had to wait for the store

    def on_text(text: str) -> None:
        nonlocal chained
        parts.append(text)
        if chained is None and delta_now(message_id, text):
            return
        delta = printer.send("agent_stream", text, message_id=message_id, is_final=False)
        chained = asyncio.ensure_future(_after(chained, delta))

    messages = [{"role": "user", "content": ctx.request.query}]
    try:
        await chat.stream_text(messages, on_text)
        if chained is not None:
            await chained
    except BaseException:
        if chained is not None:
            chained.cancel()
        # Failing or cancelled: the deltas already sent still get their final frame (DESIGN
        # §3), shielded so a cancel cannot skip it, and time-limited; the error goes on.
        if parts:
            with anyio.move_on_after(FINAL_TIMEOUT, shield=True):
                try:
                    await printer.send("agent_stream", "".join(parts), message_id=message_id)
                except StoreError:
                    pass  # the log already ended (the task was ended elsewhere)
        raise
    full = "".join(parts)
    await printer.send("agent_stream", full, message_id=message_id, is_final=True)
    printer.result(full, task_summary=full)


async def _after(previous: asyncio.Future[None] | None, step: Awaitable[object]) -> None:
    """Await ``previous`` (its error stops the chain), then ``step``."""
    try:
        if previous is not None:
            await previous
    except BaseException:
        if asyncio.iscoroutine(step):
            step.close()  # never started
        raise
    await step
