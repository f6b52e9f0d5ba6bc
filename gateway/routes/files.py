"""A task's files, served to its owner: ``/api/tasks/{id}/files/{name}`` and ``.../preview/{name}``.

The tool service keeps what a task's tools write under the task's tool ``requestId``
(:func:`~gateway.agents.tools.tool_request_id`), behind a service token and no published port
(DESIGN §10). These routes are the users' way to those files, and the links the agents print
lead here (:mod:`gateway.agents.files`):

- Who: the task's owner. The security middleware answers 404 for another key's task before
  this runs (as for ``GET /api/tasks/{id}``); an unknown task is a 404 here.
- What: one plain file name; ``/``, ``\\``, NUL and other control characters, ``.``/``..`` and
  any other leading dot are a 400 (never passed on). A file the service does not have is a 404.
- How: the body is streamed from the tool service (with the service token, under the tool
  time limits: connect, idle between two chunks, ``TOOL_TIMEOUT`` in all), never buffered
  whole; its ``Content-Type`` (download) and ``Content-Length`` are passed on.

``files/`` answers ``Content-Disposition: attachment``. ``preview/`` shows a file inline when
its type is one a browser cannot be fooled by: plain text (markdown, CSV, JSON, code … as
``text/plain``) and raster images. HTML and SVG, which an LLM wrote and which could run
script as the gateway's origin, are shown only under ``Content-Security-Policy: sandbox;
default-src 'none'; …``: a unique opaque origin, no script, no forms, no requests (inline
styles and ``data:`` images only), so a report renders but cannot read or act for its viewer.
Any other type is sent as an attachment. Every answer carries ``X-Content-Type-Options:
nosniff`` and the sandbox policy.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
from collections.abc import AsyncGenerator, Mapping
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.agents.files import file_name_problem
from gateway.agents.tools import tool_request_id
from gateway.routes.errors import ApiError
from gateway.security import key_name
from gateway.tasks import TaskManager
from gateway.upstream import ToolServiceClient, UpstreamError, UpstreamHTTPError

__all__ = ["routes"]

logger = logging.getLogger(__name__)

_TEXT = "text/plain; charset=utf-8"
_INLINE_TYPES = {
    **dict.fromkeys(
        (".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".jsonl", ".log", ".py", ".sql"),
        _TEXT,
    ),
    **dict.fromkeys((".yaml", ".yml", ".toml", ".ini", ".xml", ".js", ".css", ".sh"), _TEXT),
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SANDBOX = "sandbox"
_ACTIVE_SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_ACTIVE_TYPES = ("text/html", "image/svg+xml")


class _FileRelay(StreamingResponse):
    """A streamed file whose upstream is closed however the response ends (sent, cut, failed)."""

    def __init__(
        self,
        stack: contextlib.AsyncExitStack,
        chunks: AsyncGenerator[bytes, None],
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        super().__init__(chunks, headers=headers, media_type=media_type)
        self._chunks = chunks
        self._stack = stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._chunks.aclose()
            finally:
                await self._stack.aclose()  # shielded and time-limited (``aclose_quietly``)


def _disposition(kind: str, name: str) -> str:
    """``attachment``/``inline`` with the name, RFC 6266 ``filename*`` when not plain ASCII."""
    quoted = quote(name, safe="")
    if quoted == name:
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename*=UTF-8''{quoted}"


def _tools(request: Request) -> ToolServiceClient:
    manager: TaskManager = request.app.state.manager
    tools = manager.services.get("tools")
    if not isinstance(tools, ToolServiceClient):
        raise ApiError(404, "not_found", "this gateway has no tool service, so no task files")
    return tools


def _file_error(exc: UpstreamError, name: str) -> ApiError:
    """The answer for a file the tool service did not give: 404 if it has none, else 502/504."""
    if isinstance(exc, UpstreamHTTPError) and exc.upstream_status == 404:
        return ApiError(404, "not_found", f"the task has no file named {name!r}")
    logger.warning("a task file could not be read from the tool service: %s", exc.message)
    status = 504 if exc.code == "timeout" else 502
    return ApiError(status, exc.code, "the tool service could not give the file")


async def _serve(request: Request, *, preview: bool) -> Response:
    task_id = request.path_params["task_id"]
    name = request.path_params["file_name"]
    problem = file_name_problem(name)
    if problem is not None:
        raise ApiError(400, "bad_request", problem)
    manager: TaskManager = request.app.state.manager
    if await manager.store.get_for(task_id, key_name(request)) is None:
        raise ApiError(404, "not_found", "no task with that id (unknown or expired)")
    stack = contextlib.AsyncExitStack()  # closed by the response, however it ends
    try:
        upstream = await stack.enter_async_context(
            _tools(request).open_file(tool_request_id(task_id), name)
        )
    except UpstreamError as exc:  # nothing was entered: the stack holds nothing to close
        raise _file_error(exc, name) from exc
    media_type = upstream.media_type
    disposition, policy = "attachment", _SANDBOX
    inline = _INLINE_TYPES.get(posixpath.splitext(name)[1].lower()) if preview else None
    if inline is not None:
        media_type, disposition = inline, "inline"
        if inline.startswith(_ACTIVE_TYPES):
            policy = _ACTIVE_SANDBOX
    headers = {
        "Content-Disposition": _disposition(disposition, name),
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-cache",
    }
    if upstream.size is not None:
        headers["Content-Length"] = str(upstream.size)
    return _FileRelay(stack, upstream.chunks(), headers=headers, media_type=media_type)


async def download_file(request: Request) -> Response:
    """``GET /api/tasks/{id}/files/{name}``: the file as an attachment."""
    return await _serve(request, preview=False)


async def preview_file(request: Request) -> Response:
    """``GET /api/tasks/{id}/preview/{name}``: the file inline when its type is safe to show."""
    return await _serve(request, preview=True)


# ``:path`` so that a name with a (decoded) ``/`` reaches the check and gets its 400.
routes = [
    Route("/api/tasks/{task_id}/files/{file_name:path}", download_file, methods=["GET"]),
    Route("/api/tasks/{task_id}/preview/{file_name:path}", preview_file, methods=["GET"]),
]
