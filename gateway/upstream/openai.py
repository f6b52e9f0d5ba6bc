"""A client for any OpenAI-compatible ``/chat/completions`` endpoint, streamed or not.

Time limits: connect (``llm_connect_timeout``), idle read — the wait for headers and between two
chunks (``llm_idle_timeout``) — and total, retries included (``llm_total_timeout``).

Retries: with exponential back-off (jittered, capped, ``Retry-After`` honoured), at most
``llm_max_retries`` times, only on connect errors and timeouts, 5xx and 429, and only while
nothing has been yielded to the caller. After the first delta a failure raises: the caller has
already shown the partial answer and a silent second answer would duplicate it.

Transport: ``stream_chat`` and ``stream_text`` run on the raw HTTP/1.1 client of
:mod:`gateway.upstream._wire` (the per-token hot path; ``stream_text`` hands text to a callback
from the connection's reader, without waking a task per chunk), also through a proxy from
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (``NO_PROXY`` honoured; see
:mod:`gateway.upstream._target`). aiohttp, the cheapest library client with proxies and TLS,
costs twice as much per chunk on the relay's path (``bench/README.md``). The non-streamed
``complete`` takes the same client: one transport for every LLM call.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Self

import anyio
import orjson

from gateway.upstream._http import Deadline, status_error
from gateway.upstream._target import Target
from gateway.upstream._wire import WirePool, WireResponse
from gateway.upstream.chat import (
    ChatAssembler,
    ChatEvent,
    ChatResult,
    parse_completion,
)
from gateway.upstream.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.sse import SSEDecoder

__all__ = ["ChatClient", "TextSink"]

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
        return exc.upstream_status == 429 or (exc.upstream_status or 0) >= 500
    return False


class ChatClient:
    """Streams chat completions; use ``async with ChatClient(settings) as chat``."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        context = None
        if self._url.startswith("https:"):
            context = ssl.create_default_context(cafile=settings.llm_ca_file or None)
        self._target = Target.parse(self._url, proxies=True)
        self._wire = WirePool(
            connect_timeout=settings.llm_connect_timeout,
            idle_timeout=settings.llm_idle_timeout,
            ssl_context=context,
            what=_WHAT,
        )

    async def aclose(self) -> None:
        """Close the connections this client opened."""
        self._wire.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

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

    async def stream_text(
        self,
        messages: Messages,
        on_text: Callable[[str], None],
        tools: Tools | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatResult:
        """Stream a completion, handing each piece of the answer's text to ``on_text`` as it
        arrives; return the whole :class:`ChatResult` (tool calls are only assembled).

        The same time limits, errors and retries as :meth:`stream_chat` (a retry only while
        ``on_text`` has not been called). On the wire client, ``on_text`` runs in the
        connection's read callback, no task woken per chunk: the relay's hot path. It must not
        block; what it raises ends the stream (closing the connection) and is raised here.
        A server that answers with one JSON completion gives its text as one piece.
        """
        body = self._body(messages, tools, params, stream=True)
        deadline = Deadline(self._settings.llm_total_timeout, _WHAT)
        attempt = 0
        while True:
            sink = TextSink(on_text)
            try:
                result = await self._text_once(body, headers, deadline, sink)
            except UpstreamError as exc:
                if sink.emitted or not await self._backoff(exc, attempt, deadline):
                    raise
            else:
                if not sink.emitted and result.content:
                    on_text(result.content)
                return result
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

    def _headers(self, headers: Mapping[str, str] | None, sse: bool) -> dict[str, str]:
        all_headers = {"content-type": "application/json"}
        if sse:
            all_headers["accept"] = "text/event-stream"
        if self._settings.llm_api_key:
            all_headers["authorization"] = "Bearer " + self._settings.llm_api_key
        all_headers.update((k.lower(), v) for k, v in (headers or {}).items())
        return all_headers

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

    async def _answer(
        self,
        body: bytes,
        headers: Mapping[str, str] | None,
        deadline: Deadline,
        *,
        sse: bool = True,
    ) -> WireResponse:
        """Send the request; the answer's headers are in."""
        wire_headers = self._headers(headers, sse=sse)
        wire_headers.setdefault("accept-encoding", "identity")
        wire_headers.setdefault("user-agent", "agent-gateway")
        return await self._wire.request(self._target, wire_headers, body, deadline)

    async def _stream_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline
    ) -> AsyncGenerator[ChatEvent, None]:
        answer = await self._answer(body, headers, deadline)
        try:
            whole = await _whole_or_stream(answer)
            if whole is not None:
                yield whole
                return
            decoder, assembler = SSEDecoder(), ChatAssembler()
            while chunk := await answer.read():
                for data in decoder.feed_data(chunk):
                    if _is_done(data):
                        await answer.finish()
                        yield assembler.result()
                        return
                    for event in assembler.feed(_loads(data)):
                        yield event
            yield _ended(assembler)
        finally:
            await answer.aclose()

    async def _text_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline, sink: TextSink
    ) -> ChatResult:
        answer = await self._answer(body, headers, deadline)
        try:
            whole = await _whole_or_stream(answer)
            if whole is not None:
                return whole
            await answer.pipe(sink)
            if sink.done:
                await answer.finish()
                return sink.assembler.result()
            return _ended(sink.assembler)
        finally:
            await answer.aclose()

    async def _complete_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline
    ) -> ChatResult:
        answer = await self._answer(body, headers, deadline, sse=False)
        try:
            with deadline.limit():
                content = await answer.aread()
        finally:
            await answer.aclose()
        if answer.status_code >= 400:
            raise status_error(answer.status_code, answer.headers, content, _WHAT)
        return parse_completion(_loads(content))


class TextSink:
    """Decodes a streamed body as it arrives (``WireResponse.pipe``): every event is assembled,
    the text deltas also go to ``on_text``. Called once per chunk of the body: a relay's hot
    path, so the usual chunk (one JSON event) takes no call it can do without."""

    __slots__ = ("_decoder", "_on_text", "assembler", "done")

    def __init__(self, on_text: Callable[[str], None]) -> None:
        self._on_text = on_text
        self._decoder = SSEDecoder()
        self.assembler = ChatAssembler()
        self.done = False  # [DONE] was read

    @property
    def emitted(self) -> bool:
        """Whether ``on_text`` was called (a retry would repeat text)."""
        return self.assembler.has_content

    def __call__(self, body: bytes) -> bool:
        for data in self._decoder.feed_data(body):
            if len(data) < 32 and _is_done(data):
                self.done = True
                return True
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = _loads(data)  # raises, or decodes what invalid UTF-8 hid
            self.assembler.take(chunk, self._on_text)
        return False


async def _whole_or_stream(answer: WireResponse) -> ChatResult | None:
    """Raise for an error status or an unexpected content type; the whole result where the
    server ignored ``stream: true`` and sent one completion; None for an event stream."""
    if answer.status_code >= 400:
        raise status_error(answer.status_code, answer.headers, await answer.aread(), _WHAT)
    content_type = answer.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        return parse_completion(_loads(await answer.aread()))
    if not content_type.startswith("text/event-stream"):
        raise UpstreamProtocolError(f"{_WHAT}: unexpected content type {content_type!r}")
    return None


def _is_done(data: str | bytes) -> bool:
    return len(data) < 32 and data.strip() in ("[DONE]", b"[DONE]")


def _ended(assembler: ChatAssembler) -> ChatResult:
    """The result of a body that ended without ``[DONE]``: whole if a choice finished."""
    if assembler.finish_reason is None:
        raise UpstreamProtocolError(f"{_WHAT}: the stream ended before [DONE]")
    return assembler.result()


def _loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if isinstance(data, bytes):  # invalid UTF-8 is replaced, as in decoded SSE text
            return _loads(data.decode("utf-8", "replace"))
        raise UpstreamProtocolError(f"{_WHAT}: a chunk is not JSON: {data[:120]!r}") from exc
