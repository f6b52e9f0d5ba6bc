"""A client for the streaming tool service (``POST /v1/tool/<tool>``, JoyAgent's genie-tool).

The service answers SSE frames ``data: <json>``, heartbeats ``data: heartbeat`` and a final
``data: [DONE]``. Time limits: connect, idle (between two frames; heartbeats count as data, so a
working tool is never cut) and total (``tool_timeout``).

The files the tools wrote are read back with :meth:`ToolServiceClient.open_file`
(``GET /v1/file_tool/download/<requestId>/<fileName>``), streamed under the same limits.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from gateway.upstream._http import Deadline, OwnedHttp, aclose_quietly, http_error
from gateway.upstream.errors import UpstreamProtocolError, UpstreamRemoteError, from_httpx
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.sse import aiter_sse

__all__ = ["ToolFile", "ToolServiceClient"]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_]+")
_HEARTBEAT = "heartbeat"
_DONE = "[DONE]"


class ToolServiceClient(OwnedHttp):
    """Streams tool runs from the tool service; use ``async with ToolServiceClient(settings)``."""

    def __init__(
        self, settings: UpstreamSettings, *, http: httpx.AsyncClient | None = None
    ) -> None:
        self._settings = settings
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.tool_idle_timeout,
                connect=settings.tool_connect_timeout,
                pool=settings.tool_connect_timeout,
            ),
            # Concurrency is bounded by MAX_RUNNING, not by the client's pool (default 100).
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._base = settings.tool_service_url.rstrip("/")

    async def stream(
        self, tool: str, payload: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Run ``tool`` (``code_interpreter``, ``deepsearch``, ``report`` …); yield its frames.

        Yields each JSON frame as a dict; heartbeats are skipped. Raises
        :class:`UpstreamRemoteError` on a frame with a non-empty ``error`` key,
        :class:`UpstreamProtocolError` when the stream ends without ``[DONE]``, and the other
        :class:`UpstreamError` subclasses on HTTP errors and time limits. A service that
        answers one JSON object instead of a stream (``stream: false``) yields that object.
        """
        if not _TOOL_NAME.fullmatch(tool):
            raise ValueError(f"invalid tool name {tool!r}")
        what = f"tool {tool}"
        deadline = Deadline(self._settings.tool_timeout, what)
        request = self._http.build_request(
            "POST",
            f"{self._base}/v1/tool/{tool}",
            content=orjson.dumps(dict(payload)),
            headers={
                "content-type": "application/json",
                "accept": "text/event-stream",
                **self._settings.service_headers,
            },
        )
        response = await self._send(request, deadline, what)
        try:
            async with aclosing(_frames(response, deadline, what)) as frames:
                async for frame in frames:
                    yield frame
        except httpx.HTTPError as exc:
            raise from_httpx(exc, what) from exc
        finally:
            await aclose_quietly(response)

    async def _send(self, request: httpx.Request, deadline: Deadline, what: str) -> httpx.Response:
        """Send ``request`` (the response streamed) within ``deadline``; httpx errors converted."""
        try:
            with deadline.limit():
                return await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise from_httpx(exc, what) from exc

    @asynccontextmanager
    async def open_file(self, request_id: str, name: str) -> AsyncIterator[ToolFile]:
        """Open the file ``name`` of ``request_id`` for reading; close it when the block ends.

        Raises :class:`UpstreamHTTPError` when the service answers an error (``upstream_status``
        404 for a missing file) and the other :class:`UpstreamError` subclasses on connection
        errors and time limits (connect, idle between two chunks, ``tool_timeout`` in all).
        """
        what = f"file {name!r}"
        deadline = Deadline(self._settings.tool_timeout, what)
        tail = quote(request_id, safe="") + "/" + quote(name, safe="")
        request = self._http.build_request(
            "GET",
            f"{self._base}/v1/file_tool/download/{tail}",
            headers={"accept-encoding": "identity", **self._settings.service_headers},
        )
        response = await self._send(request, deadline, what)
        try:
            if response.status_code >= 400:
                with deadline.limit():
                    body = await response.aread()
                raise http_error(response, body, what)
            yield ToolFile(response, deadline, what)
        except httpx.HTTPError as exc:
            raise from_httpx(exc, what) from exc
        finally:
            await aclose_quietly(response)


class ToolFile:
    """A file being read from the tool service (see :meth:`ToolServiceClient.open_file`)."""

    def __init__(self, response: httpx.Response, deadline: Deadline, what: str) -> None:
        self._response = response
        self._deadline = deadline
        self._what = what

    @property
    def media_type(self) -> str:
        """The service's ``Content-Type``."""
        return self._response.headers.get("content-type", "application/octet-stream")

    @property
    def size(self) -> int | None:
        """The service's ``Content-Length`` (``None`` when it sent none)."""
        raw = self._response.headers.get("content-length", "")
        return int(raw) if raw.isascii() and raw.isdigit() else None

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The bytes of the file as they arrive, each read within the time limits."""
        raw = self._response.aiter_raw()
        try:
            while True:
                with self._deadline.limit():
                    chunk = await anext(raw, None)
                if chunk is None:
                    return
                yield chunk
        except httpx.HTTPError as exc:
            raise from_httpx(exc, self._what) from exc


async def _frames(
    response: httpx.Response, deadline: Deadline, what: str
) -> AsyncGenerator[dict[str, Any], None]:
    if response.status_code >= 400:
        with deadline.limit():
            raise http_error(response, await response.aread(), what)
    if response.headers.get("content-type", "").startswith("application/json"):
        with deadline.limit():
            body = await response.aread()
        yield _frame(body.decode("utf-8", errors="replace"), what)
        return
    async with aclosing(aiter_sse(response)) as events:
        while True:
            with deadline.limit():
                event = await anext(events, None)
            if event is None:
                raise UpstreamProtocolError(f"{what}: the stream ended before [DONE]")
            data = event.data.strip()
            if data == _DONE:
                return
            if data == _HEARTBEAT:
                continue
            yield _frame(data, what)


def _frame(data: str, what: str) -> dict[str, Any]:
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(f"{what}: a frame is not JSON: {data[:120]!r}") from exc
    if not isinstance(frame, dict):
        raise UpstreamProtocolError(f"{what}: a frame is not a JSON object: {data[:120]!r}")
    error = frame.get("error")
    if error:  # ``"error": null`` on an ordinary frame is not an error
        message = error.get("message", error) if isinstance(error, dict) else error
        raise UpstreamRemoteError(f"{what}: {message}", detail=frame)
    return frame
