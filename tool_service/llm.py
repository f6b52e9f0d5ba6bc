"""A small streaming client for OpenAI-compatible ``/chat/completions`` servers.

Only what the tools need: send messages, stream back the text deltas. The upstream SSE is parsed
by the WHATWG rules (``data:`` with or without the space, CR/LF/CRLF line ends, comments, multi-line
data, ``[DONE]``). Every call has connect and idle-read limits (httpx) and a total limit checked
between chunks; any failure becomes an :class:`~tool_service.errors.UpstreamError`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import anyio
import httpx
import orjson

from .errors import UpstreamError, UpstreamTimeout
from .settings import LLMSettings

__all__ = ["LLMClient", "Message", "iter_sse_data"]

logger = logging.getLogger(__name__)

Message = dict[str, str]


class LLMClient:
    """Streams chat completions from the configured LLM over a shared ``httpx.AsyncClient``."""

    def __init__(self, settings: LLMSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http

    async def stream_chat(self, messages: list[Message]) -> AsyncIterator[str]:
        """Yield the assistant's text deltas for ``messages`` as they arrive."""
        settings = self._settings
        body = {"model": settings.model, "messages": messages, "stream": True}
        headers = {"Accept": "text/event-stream"}
        if settings.api_key:
            headers["Authorization"] = "Bearer " + settings.api_key
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        deadline = anyio.current_time() + settings.total_timeout
        url = settings.base_url + "/chat/completions"
        try:
            async with self._http.stream(
                "POST", url, content=orjson.dumps(body), headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    detail = (await response.aread())[:300].decode("utf-8", "replace")
                    raise UpstreamError(
                        f"the LLM answered HTTP {response.status_code}: {detail}".strip()
                    )
                async for data in iter_sse_data(response.aiter_lines()):
                    if data.strip() == "[DONE]":
                        return
                    delta = _delta_of(data)
                    if delta:
                        yield delta
                    if anyio.current_time() > deadline:
                        raise UpstreamTimeout(
                            f"the LLM did not finish within {settings.total_timeout:g} s"
                        )
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the LLM timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the LLM could not be reached: {exc!r}") from exc

    async def complete(self, messages: list[Message]) -> str:
        """The whole answer to ``messages`` as one string."""
        parts = [delta async for delta in self.stream_chat(messages)]
        return "".join(parts)


async def iter_sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield the ``data`` of each SSE event in ``lines`` (line ends already stripped)."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _delta_of(data: str) -> str:
    """The text delta of one chat-completion chunk."""
    try:
        chunk: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("the LLM sent a chunk that is not JSON") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError("the LLM sent a chunk that is not an object")
    if chunk.get("error"):
        raise UpstreamError(f"the LLM reported an error: {chunk['error']!r}"[:400])
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta") or choices[0].get("message") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""
