"""The tool service app; ``create_app()`` is the factory ``agent-gateway serve tool_service`` runs.

Routes: ``GET /health``, ``POST /v1/tool/{code_interpreter,deepsearch,report}`` (SSE or JSON) and
the file tool under ``/v1/file_tool/``. Errors answer ``{"error": {"code", "message"}}``. With
``SERVICE_TOKEN`` set every route but ``/health`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from ._auth import RequireServiceToken
from ._http import Services
from .errors import ToolServiceError
from .file_routes import file_routes
from .files import FileStore
from .llm import LLMClient
from .sandbox import Sandbox
from .search import DEFAULT_CORPUS, BM25Index, LocalEngine, SearchEngine, SearxngEngine, load_corpus
from .settings import Settings
from .tool_routes import health, tool_routes

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_OPEN_PATHS = frozenset({"/health"})  # healthchecks need no token
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; ``settings`` default to :meth:`Settings.from_env` (read once, here)."""
    settings = settings if settings is not None else Settings.from_env()
    folders = [DEFAULT_CORPUS]
    if settings.search_corpus_dir is not None:
        folders.append(settings.search_corpus_dir)
    index = BM25Index(load_corpus(folders))
    files = FileStore(settings.file_root, settings.max_file_bytes)
    sandbox = Sandbox(settings.sandbox)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(follow_redirects=False) as http:
            engines: list[SearchEngine] = [LocalEngine(index)]
            if settings.searxng_url:
                engines.append(SearxngEngine(settings.searxng_url, http))
            app.state.services = Services(
                settings=settings,
                files=files,
                sandbox=sandbox,
                llm=LLMClient(settings.llm, http),
                engines=tuple(engines),
            )
            logger.info("tool service ready: %d corpus documents", len(index.documents))
            yield

    middleware = []
    if settings.service_token:
        token = settings.service_token
        middleware.append(Middleware(RequireServiceToken, token=token, open_paths=_OPEN_PATHS))
    else:
        logger.info("SERVICE_TOKEN is unset: the tool service accepts requests from anyone")

    return Starlette(
        middleware=middleware,
        routes=[
            Route("/health", health, methods=["GET"]),
            Mount("/v1/tool", routes=tool_routes()),
            Mount("/v1/file_tool", routes=file_routes()),
        ],
        exception_handlers={
            ToolServiceError: _tool_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
        # JSON uploads carry text content, which JSON escaping can inflate.
        max_body_size=settings.max_file_bytes * 2 + 64 * 1024,
    )


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _tool_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ToolServiceError):  # pragma: no cover - registered for this type
        raise exc
    return _error(exc.status_code, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for this type
        raise exc
    code = _HTTP_CODES.get(
        exc.status_code, "invalid_request" if exc.status_code < 500 else "internal"
    )
    return _error(exc.status_code, code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s", request.url.path, exc_info=exc)
    return _error(500, "internal", "internal error")
