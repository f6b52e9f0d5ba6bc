"""The typed events of a streamed chat completion, and the assembly of chunks into a result.

A stream yields :class:`ContentDelta` and :class:`ToolCallDelta` as chunks arrive, then exactly
one :class:`ChatResult` with the content and the tool calls assembled by index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.upstream.errors import UpstreamProtocolError, UpstreamRemoteError

__all__ = [
    "ChatAssembler",
    "ChatEvent",
    "ChatResult",
    "ContentDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "parse_completion",
]


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """A piece of the assistant's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call ``index``: ``id`` and ``name`` come first, then argument fragments."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call; ``arguments`` is the JSON text exactly as the model wrote it."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; invalid JSON or a non-object raises UpstreamProtocolError."""
        try:
            value = orjson.loads(self.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(f"tool call {self.name}: arguments are not JSON") from exc
        if not isinstance(value, dict):
            raise UpstreamProtocolError(f"tool call {self.name}: arguments are not an object")
        return value


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts reported by the model."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """Build from an OpenAI ``usage`` object; missing counts are 0."""
        prompt = int(data.get("prompt_tokens") or 0)
        completion = int(data.get("completion_tokens") or 0)
        return cls(prompt, completion, int(data.get("total_tokens") or prompt + completion))


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The whole answer: always the last event of a stream, and what ``complete`` returns."""

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation before sending tool results."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        return message


ChatEvent = ContentDelta | ToolCallDelta | ChatResult


class ChatAssembler:
    """Accumulates ``chat.completion.chunk`` objects; :meth:`feed` returns the deltas to yield."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    @property
    def has_content(self) -> bool:
        """Whether any text was taken."""
        return bool(self._content)

    def feed(self, chunk: Mapping[str, Any]) -> list[ChatEvent]:
        """Take one chunk; an in-band ``error`` object raises UpstreamRemoteError."""
        events: list[ChatEvent] = []
        self.take(chunk, lambda text: events.append(ContentDelta(text)), events)
        return events

    def take(
        self,
        chunk: Mapping[str, Any],
        on_text: Callable[[str], object],
        calls: list[ChatEvent] | None = None,
    ) -> None:
        """``feed`` without event objects for the text: each piece goes to ``on_text``, the
        tool-call deltas to ``calls`` (if given), in the chunk's order."""
        get = chunk.get
        if get("error"):
            raise UpstreamRemoteError(f"LLM: {_error_text(chunk['error'])}", detail=chunk["error"])
        usage = get("usage")
        if usage is not None and _is_mapping(usage):
            self.usage = Usage.from_dict(usage)
        for choice in get("choices") or ():
            if type(choice) is not dict and not _is_mapping(choice):
                continue
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or _NO_DELTA
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._content.append(text)
                on_text(text)
            if "tool_calls" in delta:
                for raw in delta["tool_calls"] or ():
                    call = self._feed_tool_call(raw)
                    if calls is not None:
                        calls.append(call)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _feed_tool_call(self, raw: Mapping[str, Any]) -> ToolCallDelta:
        index = raw.get("index")
        if not isinstance(index, int):  # some servers omit it: a new id starts a new call
            index = len(self._calls) if raw.get("id") or not self._calls else max(self._calls)
        call = self._calls.setdefault(index, {"id": None, "name": None, "arguments": []})
        function = raw.get("function") or {}
        call_id, name = raw.get("id"), function.get("name")
        arguments = function.get("arguments") or ""
        if call_id and not call["id"]:
            call["id"] = call_id
        if name and not call["name"]:
            call["name"] = name
        call["arguments"].append(arguments)
        return ToolCallDelta(index, call_id, name, arguments)

    def result(self) -> ChatResult:
        """The assembled answer so far."""
        calls = tuple(
            ToolCall(c["id"] or f"call_{i}", c["name"] or "", "".join(c["arguments"]))
            for i, c in sorted(self._calls.items())
        )
        finish = self.finish_reason or ("tool_calls" if calls else None)
        return ChatResult("".join(self._content), calls, finish, self.usage)


def parse_completion(data: Any) -> ChatResult:
    """A :class:`ChatResult` from a non-streamed ``chat.completion`` object."""
    if not isinstance(data, Mapping):
        raise UpstreamProtocolError("LLM: the completion is not a JSON object")
    if data.get("error"):
        raise UpstreamRemoteError(f"LLM: {_error_text(data['error'])}", detail=data["error"])
    choices = data.get("choices")
    if not choices or not isinstance(choices[0], Mapping):
        raise UpstreamProtocolError("LLM: the completion has no choices")
    message = choices[0].get("message") or {}
    calls = tuple(
        ToolCall(
            str(c.get("id") or f"call_{i}"),
            str((c.get("function") or {}).get("name") or ""),
            str((c.get("function") or {}).get("arguments") or ""),
        )
        for i, c in enumerate(message.get("tool_calls") or ())
    )
    usage = Usage.from_dict(data["usage"]) if isinstance(data.get("usage"), Mapping) else None
    finish = choices[0].get("finish_reason") or ("tool_calls" if calls else None)
    return ChatResult(str(message.get("content") or ""), calls, finish, usage)


_NO_DELTA: Mapping[str, Any] = {}


def _is_mapping(value: Any) -> bool:
    # JSON decodes to plain dicts; the ABC check (slow, once per chunk) is for anything else
    return type(value) is dict or isinstance(value, Mapping)


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        return str(error.get("message") or error)
    return str(error)
