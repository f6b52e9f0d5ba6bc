"""Model turns and the tool loop shared by the ReAct agent and the plan executor.

Live text (DESIGN §3): every piece of a turn's text is appended as it arrives, under the turn's
one ``messageId``, as non-final ``tool_thought`` frames. What the text *is* is known only when
the turn ends, so its final frame decides: ``tool_thought`` when tool calls followed, the answer
type (``agent_stream``, or ``task_summary`` in the plan executor) when the turn is the answer.
A turn with no text before its tool calls prints nothing.

An LLM failure raises :class:`TaskFailure` with the upstream's code (``upstream_error`` or
``timeout``) after ending the turn's message with what it had, as the answer: no tool call
followed it. A cancelled turn is ended the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.agents._streams import LiveText
from gateway.agents.tools import ToolBox
from gateway.printer import Printer
from gateway.tasks.context import TaskFailure
from gateway.upstream import ChatClient, ChatResult, UpstreamError

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
    """One streamed model turn, printed as one message: ``thought`` deltas as the text
    arrives, then a final frame typed ``thought`` if tool calls followed, else ``answer``.

    With ``thought == answer`` the turn is that type throughout. ``tools_allowed=False`` sends
    the tools with ``tool_choice: "none"`` (the model sees them but must answer). A turn with
    no text prints nothing, unless it is the answer (which always gets its final frame).
    """
    live = LiveText(printer, thought)
    can_call = bool(tools) and tools_allowed
    params: dict[str, Any] = {} if tools_allowed or not tools else {"tool_choice": "none"}
    try:
        result = await chat.stream_text(messages, live.write, tools or None, **params)
    except UpstreamError as exc:
        # No tool call was assembled: the text so far was the (partial) answer.
        await live.interrupt(answer)
        raise TaskFailure(exc.code, exc.message) from exc
    except BaseException:
        await live.interrupt(answer)
        raise
    if not can_call:
        result = ChatResult(result.content, (), result.finish_reason, result.usage)
    try:
        await live.finish(thought if result.tool_calls else answer, force=not result.tool_calls)
    except BaseException:
        await live.interrupt(thought if result.tool_calls else answer)
        raise
    return result


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
