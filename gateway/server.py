"""Running the gateway under uvicorn with a clean drain on SIGTERM / SIGINT.

On a stop signal the gateway first *drains*: every open SSE stream ends cleanly (its client
resumes on another replica with ``Last-Event-ID``), then uvicorn stops, then the lifespan gives
running tasks ``SHUTDOWN_GRACE`` seconds and hands the rest over (Redis) or interrupts them.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.drain import Drain


def drain(app: Starlette) -> None:
    """Ask every open stream of ``app`` to end; safe to call from a signal handler."""
    draining: Drain = app.state.draining
    loop: asyncio.AbstractEventLoop | None = getattr(app.state, "loop", None)
    if loop is None:
        return
    with contextlib.suppress(RuntimeError):  # the loop is already closed
        loop.call_soon_threadsafe(draining.set)


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains the gateway's streams before it stops."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.gateway_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain(self.gateway_app)
        super().handle_exit(sig, frame)


def serve_gateway(host: str, port: int, log_level: str = "info") -> None:
    """Build the gateway from the environment and serve it until a stop signal."""
    app = create_app()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    DrainingServer(config, app).run()
