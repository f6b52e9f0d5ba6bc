"""Model turns and the tool loop shared by the ReAct agent and the plan executor.

What a piece of model text *is* depends on what follows it: text followed by tool calls is a
thought (``tool_thought``), text that ends the turn is the answer. So while tools are offered,
text is held back until the first tool-call fragment (then it streams on as a thought) or the
end of the turn (then it is printed as the answer, one delta per piece and the final frame).
When no tool can be called, the text is the answer from the start and streams live.

An LLM failure raises :class:`TaskFailure` with the upstream's code (``upstream_error`` or
``timeout``) after ending every open message with what it had; held-back text is printed as the
answer, since no tool call followed it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import aclosing
from typing import Any

from gateway.agents._streams import TextStream
from gateway.agents.tools import ToolBox
from gateway.printer import Printer
from gateway.tasks.context import TaskFailure
from gateway.upstream import (
    ChatClient,
    ChatResult,
    ContentDelta,
    ToolCallDelta,
    UpstreamError,
    UpstreamProtocolError,
)

__all__ = ["converse", "run_tool_loop"]

Message = dict[str, Any]


async def converse(
    chat: ChatClient,
    printer: Printer,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] = (),
    *,
    thought: str,
    answer: str,
    tools_allowed: bool = True,
) -> ChatResult:
    """One streamed model turn, printed as ``thought`` and/or ``answer`` messages.

    With ``thought == answer`` all text streams live as that type. ``tools_allowed=False``
    sends the tools with ``tool_choice: "none"`` (the model sees them but must answer).
    """
    thought_stream = TextStream(printer, thought)
    answer_stream = TextStream(printer, answer)
    can_call = bool(tools) and tools_allowed
    target: TextStream | None = answer_stream if not can_call or thought == answer else None
    pending: list[str] = []
    params: dict[str, Any] = {} if tools_allowed or not tools else {"tool_choice": "none"}
    result: ChatResult | None = None
    async with thought_stream, answer_stream:
        try:
            async with aclosing(chat.stream_chat(messages, tools or None, **params)) as events:
                async for event in events:
                    if isinstance(event, ContentDelta):
                        if target is None:
                            pending.append(event.text)
                        else:
                            await target.write(event.text)
                    elif isinstance(event, ToolCallDelta):
                        if target is None:
                            target = await _flush(pending, thought_stream)
                    else:
                        result = event
            if result is None:
                raise UpstreamProtocolError("LLM: the stream ended without a result")
        except UpstreamError as exc:
            if target is None:
                await _flush(pending, answer_stream)
            raise TaskFailure(exc.code, exc.message) from exc
        if not can_call:
            result = ChatResult(result.content, (), result.finish_reason, result.usage)
        if target is None:
            target = await _flush(pending, thought_stream if result.tool_calls else answer_stream)
        # A server that ignored ``stream: true`` gives the content in the result only.
        if len(result.content) > len(target.text) and result.content.startswith(target.text):
            await target.write(result.content[len(target.text) :])
        await target.finish(force=not result.tool_calls)  # an answer always gets its frame
    return result


async def _flush(pending: list[str], stream: TextStream) -> TextStream:
    for text in pending:
        await stream.write(text)
    pending.clear()
    return stream


async def run_tool_loop(
    chat: ChatClient,
    toolbox: ToolBox,
    messages: list[Message],
    *,
    max_steps: int,
    answer: str,
) -> str:
    """Think, call tools, read their results, repeat; return the model's answer.

    ``messages`` is extended with the conversation. The last of ``max_steps`` turns, and every
    turn once the task's tool calls are used up, may not call tools, so the loop always ends
    with an answer (printed as ``answer`` messages).
    """
    tools = toolbox.schemas()
    for step in range(max_steps):
        allowed = step < max_steps - 1 and toolbox.calls_left > 0
        result = await converse(
            chat,
            toolbox.printer,
            messages,
            tools,
            thought="tool_thought",
            answer=answer,
            tools_allowed=allowed,
        )
        messages.append(result.to_message())
        if not result.tool_calls:
            return result.content
        for call in result.tool_calls:
            text = await toolbox.call(call)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
    raise RuntimeError("unreachable: the last turn of a tool loop cannot call tools")
