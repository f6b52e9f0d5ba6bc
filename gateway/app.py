"""The gateway application: store, task manager and routes wired together in one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from gateway.a2a import A2ASettings, install_a2a
from gateway.agents import agent_services, register_builtin_agents
from gateway.auth_failures import install_auth_failure_limit
from gateway.drain import Drain
from gateway.metrics import GatewayMetrics
from gateway.openapi import install_openapi
from gateway.routes import EXCEPTION_HANDLERS, compat, files, health, tasks
from gateway.routes.sse import StreamHost
from gateway.security import install_security
from gateway.settings import Settings
from gateway.store import MemoryStore, RedisStore, StreamStore
from gateway.tasks import TaskManager, TaskRegistry
from gateway.webhooks import install_webhooks

logger = logging.getLogger(__name__)


def build_store(settings: Settings, metrics: GatewayMetrics) -> StreamStore:
    """``RedisStore`` when ``REDIS_URL`` is set, else the embedded ``MemoryStore``."""
    if settings.redis_url:
        return RedisStore(
            settings.redis_url,
            result_ttl=settings.result_ttl,
            flush_interval=settings.flush_interval_ms / 1000.0,
            flush_spacing=settings.flush_spacing_ms / 1000.0,
            prefix=settings.redis_prefix,
            cluster=settings.redis_cluster,
            max_connections=settings.redis_max_connections,
            on_flush=metrics.on_flush,
            log_max_bytes=settings.log_max_bytes,
        )
    return MemoryStore(result_ttl=settings.result_ttl, log_max_bytes=settings.log_max_bytes)


def _routes() -> list[BaseRoute]:
    return [*health.routes, *tasks.routes, *files.routes, *compat.routes]


class _GatewayApp(Starlette):
    """Starlette with :class:`StreamHost` around the whole middleware stack (see there why)."""

    def build_middleware_stack(self) -> ASGIApp:
        return StreamHost(super().build_middleware_stack())


def create_app(
    settings: Settings | None = None,
    store: StreamStore | None = None,
    registry: TaskRegistry | None = None,
) -> Starlette:
    """Build the gateway app; with no arguments everything is read from the environment."""
    settings = settings or Settings.from_env()
    metrics = GatewayMetrics()
    store = store or build_store(settings, metrics)
    if registry is None:
        registry = TaskRegistry()
        register_builtin_agents(registry, echo_token_delay_ms=settings.echo_token_delay_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        await store.start()
        try:
            async with agent_services(
                settings.upstream, public_url=settings.public_url
            ) as services:
                manager = TaskManager(
                    store, registry, settings.task_settings(), services, metrics.on_append
                )
                app.state.manager = manager
                runner = asyncio.create_task(manager.run(), name="task-manager")
                try:
                    yield
                finally:
                    await manager.stop()
                    runner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await runner
        finally:
            await store.close()

    middleware: list[Middleware] = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["X-Task-Id", "Location", "Retry-After", "Content-Disposition"],
                max_age=600,
            )
        )
    app = _GatewayApp(
        routes=_routes(),
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.stream_settings = settings.stream_settings()
    app.state.draining = Drain()
    app.state.store = store
    app.state.metrics = metrics
    app.state.registry = registry
    install_auth_failure_limit(app, settings.auth_failures)  # outside the one answering 401
    install_security(app, settings.security)  # first: unauthenticated bodies are never read
    install_webhooks(app, settings.webhooks)
    install_a2a(app, A2ASettings.from_env())
    install_openapi(app)
    return app


__all__ = ["build_store", "create_app"]
