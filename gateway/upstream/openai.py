"""A client for any OpenAI-compatible ``/chat/completions`` endpoint, streamed or not.

Time limits: connect (``llm_connect_timeout``), idle read — the wait for headers and between two
chunks (``llm_idle_timeout``) — and total, retries included (``llm_total_timeout``).

Retries: with exponential back-off (jittered, capped, ``Retry-After`` honoured), at most
``llm_max_retries`` times, only on connect errors and timeouts, 5xx and 429, and only while
nothing has been yielded to the caller. After the first delta a failure raises: the caller has
already shown the partial answer and a silent second answer would duplicate it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import httpx
import orjson

from gateway.upstream._http import Deadline, OwnedHttp, aclose_quietly, http_error
from gateway.upstream.chat import ChatAssembler, ChatEvent, ChatResult, parse_completion
from gateway.upstream.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    from_httpx,
)
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.sse import aiter_sse

__all__ = ["ChatClient"]

_WHAT = "LLM"
_MAX_BACKOFF = 8.0

Messages = Sequence[Mapping[str, Any]]
Tools = Sequence[Mapping[str, Any]]


def _is_retryable(exc: UpstreamError) -> bool:
    if isinstance(exc, UpstreamConnectError):
        return True
    if isinstance(exc, UpstreamTimeout):
        return exc.phase == "connect"
    if isinstance(exc, UpstreamHTTPError):
        return exc.status_code == 429 or (exc.status_code or 0) >= 500
    return False


class ChatClient(OwnedHttp):
    """Streams chat completions; use ``async with ChatClient(settings) as chat``.

    ``http`` lets several clients share one ``httpx.AsyncClient`` (its owner closes it).
    """

    def __init__(
        self, settings: UpstreamSettings, *, http: httpx.AsyncClient | None = None
    ) -> None:
        self._settings = settings
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.llm_idle_timeout,
                connect=settings.llm_connect_timeout,
                pool=settings.llm_connect_timeout,
            ),
            # Concurrency is bounded by MAX_RUNNING, not by the client's pool (default 100).
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._url = settings.llm_base_url.rstrip("/") + "/chat/completions"

    @property
    def model(self) -> str:
        """The model name sent unless a call overrides ``model``."""
        return self._settings.llm_model

    async def stream_chat(
        self,
        messages: Messages,
        tools: Tools | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Yield ``ContentDelta`` / ``ToolCallDelta`` as they arrive, then one ``ChatResult``.

        ``params`` go into the request body (``temperature``, ``tool_choice``, ``model`` …).
        Close the generator when leaving early: ``async with aclosing(chat.stream_chat(...))``.
        Raises :class:`UpstreamError` subclasses only.
        """
        body = self._body(messages, tools, params, stream=True)
        deadline = Deadline(self._settings.llm_total_timeout, _WHAT)
        attempt = 0
        while True:
            yielded = False
            try:
                async with aclosing(self._stream_once(body, headers, deadline)) as events:
                    async for event in events:
                        yielded = True
                        yield event
                return
            except UpstreamError as exc:
                if yielded or not await self._backoff(exc, attempt, deadline):
                    raise
            attempt += 1

    async def complete(
        self,
        messages: Messages,
        tools: Tools | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatResult:
        """One non-streamed completion, with the same time limits and retries."""
        body = self._body(messages, tools, params, stream=False)
        deadline = Deadline(self._settings.llm_total_timeout, _WHAT)
        attempt = 0
        while True:
            try:
                return await self._complete_once(body, headers, deadline)
            except UpstreamError as exc:
                if not await self._backoff(exc, attempt, deadline):
                    raise
            attempt += 1

    def _body(
        self, messages: Messages, tools: Tools | None, params: Mapping[str, Any], *, stream: bool
    ) -> bytes:
        body: dict[str, Any] = {"model": self._settings.llm_model, "messages": list(messages)}
        if tools:
            body["tools"] = list(tools)
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(params)
        return orjson.dumps(body)

    def _request(self, body: bytes, headers: Mapping[str, str] | None, sse: bool) -> httpx.Request:
        all_headers = {"content-type": "application/json"}
        if sse:
            all_headers["accept"] = "text/event-stream"
        if self._settings.llm_api_key:
            all_headers["authorization"] = "Bearer " + self._settings.llm_api_key
        all_headers.update(headers or {})
        return self._http.build_request("POST", self._url, content=body, headers=all_headers)

    async def _backoff(self, exc: UpstreamError, attempt: int, deadline: Deadline) -> bool:
        """Sleep before the next attempt and return True, or return False to give up."""
        if attempt >= self._settings.llm_max_retries or not _is_retryable(exc):
            return False
        delay = min(_MAX_BACKOFF, self._settings.llm_retry_backoff * 2**attempt)
        delay *= random.uniform(0.5, 1.0)  # jitter: replicas retrying together spread out
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if delay >= deadline.remaining():
            return False
        await anyio.sleep(delay)
        return True

    async def _stream_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline
    ) -> AsyncGenerator[ChatEvent, None]:
        request = self._request(body, headers, sse=True)
        try:
            with deadline.limit():
                response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise from_httpx(exc, _WHAT) from exc
        try:
            async with aclosing(self._read_stream(response, deadline)) as events:
                async for event in events:
                    yield event
        except httpx.HTTPError as exc:
            raise from_httpx(exc, _WHAT) from exc
        finally:
            await aclose_quietly(response)

    async def _read_stream(
        self, response: httpx.Response, deadline: Deadline
    ) -> AsyncGenerator[ChatEvent, None]:
        if response.status_code >= 400:
            with deadline.limit():
                raise http_error(response, await response.aread(), _WHAT)
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/json"):  # a server that ignores stream=true
            with deadline.limit():
                yield parse_completion(_loads(await response.aread()))
            return
        if not content_type.startswith("text/event-stream"):
            raise UpstreamProtocolError(f"{_WHAT}: unexpected content type {content_type!r}")
        assembler = ChatAssembler()
        done = False
        async with aclosing(aiter_sse(response)) as events:
            while True:
                with deadline.limit():
                    sse = await anext(events, None)
                if sse is None:
                    break
                if sse.data.strip() == "[DONE]":
                    done = True
                    break
                for event in assembler.feed(_loads(sse.data.encode())):
                    yield event
        if not done and assembler.finish_reason is None:
            raise UpstreamProtocolError(f"{_WHAT}: the stream ended before [DONE]")
        yield assembler.result()

    async def _complete_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline
    ) -> ChatResult:
        request = self._request(body, headers, sse=False)
        try:
            with deadline.limit():
                response = await self._http.send(request)
        except httpx.HTTPError as exc:
            raise from_httpx(exc, _WHAT) from exc
        if response.status_code >= 400:
            raise http_error(response, response.content, _WHAT)
        return parse_completion(_loads(response.content))


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(f"{_WHAT}: a chunk is not JSON: {data[:120]!r}") from exc
