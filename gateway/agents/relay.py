"""The relay agent (``agentType: 1``): one streamed chat completion, token by token, to the log.

No tools, no planning: the user's query goes to the LLM (``ctx.services["chat"]``) and every
content delta becomes a non-final ``agent_stream`` frame; the final frame carries the full
answer, which is also the task's result. It is the plainest "stream an LLM through the gateway"
workload, and the one ``bench`` measures.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing

import anyio

from gateway.store import StoreError
from gateway.tasks.context import TaskContext, TaskFailure
from gateway.upstream import ChatClient, ContentDelta

__all__ = ["relay_agent"]

FINAL_TIMEOUT = 2.0
"""Seconds the final frame of an interrupted answer may take before it is given up."""


async def relay_agent(ctx: TaskContext) -> None:
    """Stream the answer to ``ctx.request.query`` as ``agent_stream`` deltas, then the full text."""
    chat: ChatClient | None = ctx.services.get("chat")
    if chat is None:
        raise TaskFailure("internal", "the agent service 'chat' is not configured")
    printer = ctx.printer
    send = printer.send
    message_id = uuid.uuid4().hex
    parts: list[str] = []
    messages = [{"role": "user", "content": ctx.request.query}]
    try:
        async with aclosing(chat.stream_chat(messages)) as events:
            async for event in events:
                if type(event) is ContentDelta:
                    parts.append(event.text)
                    await send("agent_stream", event.text, message_id=message_id, is_final=False)
    except BaseException:
        # Failing or cancelled: the deltas already sent still get their final frame (DESIGN
        # §3), shielded so a cancel cannot skip it, and time-limited; the error goes on.
        if parts:
            with anyio.move_on_after(FINAL_TIMEOUT, shield=True):
                try:
                    await send("agent_stream", "".join(parts), message_id=message_id)
                except StoreError:
                    pass  # the log already ended (the task was ended elsewhere)
        raise
    full = "".join(parts)
    await send("agent_stream", full, message_id=message_id, is_final=True)
    printer.result(full, task_summary=full)
