"""OpenAI wire objects for a scripted :class:`Reply`: ``chat.completion`` and its chunks."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llm_stub._text import count_words, message_text
from llm_stub.scripts import Reply

__all__ = ["Completion", "build_completion"]

_PIECE = re.compile(r"\s*\S+\s*")
_ARGUMENT_CHARS_PER_CHUNK = 8


@dataclass(frozen=True, slots=True)
class Completion:
    """One scripted answer with its ids and token counts, ready to encode."""

    reply: Reply
    model: str
    completion_id: str
    tool_call_id: str
    created: int
    prompt_tokens: int

    @property
    def arguments(self) -> str:
        """The tool call's arguments as JSON text ("" without a tool call)."""
        call = self.reply.tool_call
        return orjson.dumps(call.arguments).decode() if call else ""

    @property
    def completion_tokens(self) -> int:
        """Words of the content plus argument fragments of eight characters."""
        return count_words(self.reply.content) + -(-len(self.arguments) // 8)

    def usage(self) -> dict[str, int]:
        """The ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def message(self) -> dict[str, Any]:
        """The non-streamed ``chat.completion`` object."""
        message: dict[str, Any] = {"role": "assistant", "content": self.reply.content or None}
        if self.reply.tool_call:
            message["tool_calls"] = [self._call(self.reply.tool_call.name, self.arguments)]
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "llm_stub",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.reply.finish_reason,
                }
            ],
            "usage": self.usage(),
        }

    def chunks(self, chunk_size: int, include_usage: bool) -> list[tuple[dict[str, Any], int]]:
        """The ``chat.completion.chunk`` objects in order, each with its weight in tokens.

        Content goes ``chunk_size`` words per chunk; the tool call's first delta carries index,
        id, type, name and empty arguments, later deltas ``8 * chunk_size`` characters each.
        """
        chunks = [(self._chunk({"role": "assistant", "content": ""}, None, include_usage), 0)]
        pieces = _PIECE.findall(self.reply.content)
        for i in range(0, len(pieces), chunk_size):
            group = pieces[i : i + chunk_size]
            chunks.append(
                (self._chunk({"content": "".join(group)}, None, include_usage), len(group))
            )
        call = self.reply.tool_call
        if call is not None:
            first = {"tool_calls": [{"index": 0, **self._call(call.name, "")}]}
            chunks.append((self._chunk(first, None, include_usage), 1))
            step = _ARGUMENT_CHARS_PER_CHUNK * chunk_size
            for i in range(0, len(self.arguments), step):
                delta = {
                    "tool_calls": [
                        {"index": 0, "function": {"arguments": self.arguments[i : i + step]}}
                    ]
                }
                chunks.append((self._chunk(delta, None, include_usage), 1))
        chunks.append((self._chunk({}, self.reply.finish_reason, include_usage), 0))
        if include_usage:
            usage_chunk = self._chunk({}, None, False)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self.usage()
            chunks.append((usage_chunk, 0))
        return chunks

    def _call(self, name: str, arguments: str) -> dict[str, Any]:
        return {
            "id": self.tool_call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None, include_usage: bool
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "llm_stub",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            chunk["usage"] = None
        return chunk


def build_completion(reply: Reply, messages: Sequence[Mapping[str, Any]], model: str) -> Completion:
    """A :class:`Completion` whose ids derive from the conversation (same input, same ids)."""
    seed = orjson.dumps([message_text(m) for m in messages] + [reply.content])
    digest = hashlib.sha256(seed).hexdigest()
    return Completion(
        reply=reply,
        model=model,
        completion_id="chatcmpl-" + digest[:24],
        tool_call_id="call_" + digest[24:48],
        created=int(time.time()),
        prompt_tokens=sum(count_words(message_text(m)) for m in messages),
    )
