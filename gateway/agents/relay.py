"""The relay agent (``agentType: 1``): one streamed chat completion, token by token, to the log.

No tools, no planning: the user's query goes to the LLM (``ctx.services["chat"]``) and every
content delta becomes a non-final ``agent_stream`` frame; the final frame carries the full
answer, which is also the task's result. It is the plainest "stream an LLM through the gateway"
workload, and the one ``bench`` measures.

The deltas are appended from the upstream connection's read callback (``ChatClient.stream_text``
and :class:`~gateway.agents._streams.LiveText`): no task wakes per token.
"""

from __future__ import annotations

from gateway.agents._streams import LiveText
from gateway.tasks.context import TaskContext, TaskFailure
from gateway.upstream import ChatClient

__all__ = ["relay_agent"]


async def relay_agent(ctx: TaskContext) -> None:
    """Stream the answer to ``ctx.request.query`` as ``agent_stream`` deltas, then the full text."""
    chat: ChatClient | None = ctx.services.get("chat")
    if chat is None:
        raise TaskFailure("internal", "the agent service 'chat' is not configured")
    live = LiveText(ctx.printer, "agent_stream")
    messages = [{"role": "user", "content": ctx.request.query}]
    try:
        await chat.stream_text(messages, live.write)
        full = await live.finish("agent_stream", force=True)
    except BaseException:
        # Failing or cancelled: the deltas already sent still get their final frame (DESIGN §3).
        await live.interrupt("agent_stream")
        raise
    ctx.printer.result(full, task_summary=full)
