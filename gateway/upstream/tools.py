"""A client for the streaming tool service (``POST /v1/tool/<tool>``, JoyAgent's genie-tool).

The service answers SSE frames ``data: <json>``, heartbeats ``data: heartbeat`` and a final
``data: [DONE]``. Time limits: connect, idle (between two frames; heartbeats count as data, so a
working tool is never cut) and total (``tool_timeout``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import orjson

from gateway.upstream._http import Deadline, OwnedHttp, aclose_quietly, http_error
from gateway.upstream.errors import UpstreamProtocolError, UpstreamRemoteError, from_httpx
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.sse import aiter_sse

__all__ = ["ToolServiceClient"]

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
        try:
            with deadline.limit():
                response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise from_httpx(exc, what) from exc
        try:
            async with aclosing(_frames(response, deadline, what)) as frames:
                async for frame in frames:
                    yield frame
        except httpx.HTTPError as exc:
            raise from_httpx(exc, what) from exc
        finally:
            await aclose_quietly(response)


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
