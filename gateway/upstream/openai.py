"""A client for any OpenAI-compatible ``/chat/completions`` endpoint, streamed or not.

Time limits: connect (``llm_connect_timeout``: TCP, proxy and TLS handshake), idle read — the
wait for headers and between two chunks (``llm_idle_timeout``) — and total, retries included
(``llm_total_timeout``).

Retries: with exponential back-off (jittered, capped, ``Retry-After`` honoured), at most
``llm_max_retries`` times, only on connect errors and timeouts (a connection closed before its
answer included), 5xx and 429, and only while nothing has been yielded to the caller. After the
first delta a failure raises: the caller has already shown the partial answer and a silent
second answer would duplicate it.

Transport: one ``aiohttp.ClientSession`` per client (or one passed in), keep-alive pooled
without a connection cap (concurrency is bounded by ``MAX_RUNNING``), proxies from
``HTTP_PROXY``/``HTTPS_PROXY`` with ``NO_PROXY`` honoured (``trust_env``; an ``https`` URL goes
through the proxy by ``CONNECT``), TLS verified against the system's CAs (``SSL_CERT_FILE``
honoured) or ``llm_ca_file``. aiohttp was measured the cheapest client with proxies and TLS per
streamed chunk (``python -m bench.ingest``).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing, suppress
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from gateway.upstream._http import Deadline, status_error
from gateway.upstream.chat import (
    ChatAssembler,
    ChatEvent,
    ChatResult,
    parse_completion,
)
from gateway.upstream.chunks import TextSink, ended, is_done, loads_chunk
from gateway.upstream.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.sse import SSEDecoder

__all__ = ["ChatClient"]

_WHAT = "LLM"
_MAX_BACKOFF = 8.0
_DRAIN_GRACE = 0.5  # seconds to read what follows [DONE], so that the connection is kept
_KEEPALIVE = 5.0  # seconds an idle connection stays reusable (servers commonly close at 5 s)

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


class ChatClient:
    """Streams chat completions; use ``async with ChatClient(settings) as chat``.

    ``session`` lets several clients share one ``aiohttp.ClientSession`` (its owner closes it);
    the time limits and the CA file still come from ``settings``, per request.
    """

    def __init__(
        self, settings: UpstreamSettings, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._settings = settings
        self._url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        # made here, not at import: the system's CAs as SSL_CERT_FILE / SSL_CERT_DIR say now
        self._ssl = ssl.create_default_context(cafile=settings.llm_ca_file or None)
        self._owns_session = session is None
        self._session = session

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: a session belongs to a running loop
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=_KEEPALIVE)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=True)
        return self._session

    async def aclose(self) -> None:
        """Close the connections this client opened (not those of a session passed in)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        ``on_text`` has not been called). No event object is made per piece of text: the
        relay's hot path. ``on_text`` must not block; what it raises ends the stream (closing
        the connection) and is raised here.
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
            all_headers["accept-encoding"] = "identity"  # each event as it comes, not deflated
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
        await asyncio.sleep(delay)
        return True

    async def _send(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline, *, sse: bool
    ) -> aiohttp.ClientResponse:
        """Send the request; the answer's headers are in, its body is the caller's to close.

        The total deadline is aiohttp's per-request ``total``: one timer for the headers and
        every read of the body (not a cancel scope per read)."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.expired()
        up = self._settings
        timeout = aiohttp.ClientTimeout(
            total=remaining, connect=up.llm_connect_timeout, sock_read=up.llm_idle_timeout
        )
        try:
            return await self._client().post(
                self._url,
                data=body,
                headers=self._headers(headers, sse),
                timeout=timeout,
                ssl=self._ssl,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _error(exc, deadline, answered=False) from exc

    async def _stream_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline
    ) -> AsyncGenerator[ChatEvent, None]:
        response = await self._send(body, headers, deadline, sse=True)
        try:
            whole = await _whole_or_stream(response, deadline)
            if whole is not None:
                yield whole
                return
            decoder, assembler, content = SSEDecoder(), ChatAssembler(), response.content
            while True:
                try:
                    chunk = await content.readany()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise _error(exc, deadline, answered=True) from exc
                if not chunk:
                    break
                for data in decoder.feed_data(chunk):
                    if is_done(data):
                        await _drain(response)
                        yield assembler.result()
                        return
                    for event in assembler.feed(loads_chunk(data)):
                        yield event
            yield ended(assembler)
        finally:
            response.close()  # a no-op once the body was read to its end and released

    async def _text_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline, sink: TextSink
    ) -> ChatResult:
        response = await self._send(body, headers, deadline, sse=True)
        try:
            whole = await _whole_or_stream(response, deadline)
            if whole is not None:
                return whole
            content = response.content
            try:
                while chunk := await content.readany():
                    if sink(chunk):
                        await _drain(response)
                        return sink.assembler.result()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _error(exc, deadline, answered=True) from exc
            return ended(sink.assembler)
        finally:
            response.close()

    async def _complete_once(
        self, body: bytes, headers: Mapping[str, str] | None, deadline: Deadline
    ) -> ChatResult:
        response = await self._send(body, headers, deadline, sse=False)
        try:
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _error(exc, deadline, answered=True) from exc
            if response.status >= 400:
                raise status_error(response.status, response.headers, data, _WHAT)
            return parse_completion(loads_chunk(data))
        finally:
            response.close()


async def _whole_or_stream(
    response: aiohttp.ClientResponse, deadline: Deadline
) -> ChatResult | None:
    """Raise for an error status or an unexpected content type; the whole result where the
    server ignored ``stream: true`` and sent one completion; None for an event stream."""
    if response.status >= 400 or response.content_type == "application/json":
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _error(exc, deadline, answered=True) from exc
        if response.status >= 400:
            raise status_error(response.status, response.headers, data, _WHAT)
        return parse_completion(loads_chunk(data))
    if response.content_type != "text/event-stream":
        raise UpstreamProtocolError(f"{_WHAT}: unexpected content type {response.content_type!r}")
    return None


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows ``[DONE]`` (the body's end, usually already here) so that the
    connection goes back to the pool; a body that goes on is closed instead (by the caller)."""
    if response.content.is_eof():
        return
    with suppress(aiohttp.ClientError, TimeoutError):
        async with asyncio.timeout(_DRAIN_GRACE):
            await response.content.read()


def _error(
    exc: aiohttp.ClientError | TimeoutError, deadline: Deadline, *, answered: bool
) -> UpstreamError:
    """The :class:`UpstreamError` for what aiohttp raised; ``answered``: after the headers."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout("connect", f"{_WHAT}: connect timed out ({detail})")
    if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read: the headers or the next chunk
        return UpstreamTimeout("idle", f"{_WHAT}: no data within the idle time limit")
    if isinstance(exc, TimeoutError):  # aiohttp's per-request total: the deadline
        return deadline.expired()
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientHttpProxyError):
        return UpstreamConnectError(f"{_WHAT}: cannot connect ({detail})")
    if not answered:  # closed before the answer (a pooled connection the server dropped …)
        return UpstreamConnectError(f"{_WHAT}: the connection closed unanswered ({detail})")
    return UpstreamProtocolError(f"{_WHAT}: connection broke ({detail})")
