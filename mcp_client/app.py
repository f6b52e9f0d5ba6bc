"""The bridge's ASGI app: ``create_app()`` is the uvicorn factory run by ``agent-gateway serve``.

The lifespan owns the :class:`~mcp_client.pool.SessionPool` (and through it every session's
owner task); shutting the app down closes all MCP sessions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from mcp_client._auth import RequireServiceToken
from mcp_client.pool import SessionPool
from mcp_client.routes import health, pool_stats, serv_pong, tool_call, tool_list
from mcp_client.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_OPEN_PATHS = frozenset({"/health"})  # healthchecks need no token


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the bridge; ``settings`` default to :meth:`Settings.from_env` (read once, here)."""
    settings = settings if settings is not None else Settings.from_env()
    if settings.allowed_servers is None:
        logger.warning(
            "MCP_ALLOWED_SERVERS is unset: the bridge may be aimed at any server on a global"
            " address (loopback, private and link-local targets are refused)"
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with SessionPool(settings).running() as pool:
            app.state.pool = pool
            yield

    middleware = []
    if settings.service_token:
        token = settings.service_token
        middleware.append(Middleware(RequireServiceToken, token=token, open_paths=_OPEN_PATHS))
    else:
        logger.info("SERVICE_TOKEN is unset: the bridge accepts requests from anyone")

    app = Starlette(
        middleware=middleware,
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/serv/pong", serv_pong, methods=["POST"]),
            Route("/v1/tool/list", tool_list, methods=["POST"]),
            Route("/v1/tool/call", tool_call, methods=["POST"]),
            Route("/v1/pool", pool_stats, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
