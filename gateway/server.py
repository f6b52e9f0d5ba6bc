"""Running the gateway under uvicorn with a clean drain on SIGTERM / SIGINT.

On a stop signal the gateway first *drains*: every open SSE stream ends cleanly (its client
resumes on another replica with ``Last-Event-ID``), then uvicorn stops, then the lifespan gives
running tasks ``SHUTDOWN_GRACE`` seconds and hands the rest over (Redis) or interrupts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.drain import Drain
from gateway.header_timeout import header_timeout_protocol
from gateway.settings import Settings


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


GC_YOUNG_THRESHOLD = 10_000
"""Net allocations between two passes of the collector over the youngest objects (CPython's
default, 700, made the busy gateway run ≈ 470 passes in a 3-minute bench, ≈ 1.7 ms each)."""

GC_MIDDLE_THRESHOLD = 100
"""Passes over the youngest objects between two over the middle generation (CPython's default,
10, gave 500 streams of bench a a middle pass every few seconds of 20 to 75 ms: it visits every
live task's coroutines, futures and dicts; at 100, most of them have ended before a pass)."""


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the streams' path. Call once the app is built.

    What exists at startup (modules, classes, functions: over 100,000 objects) is frozen, out
    of the collector's sight: each full pass visited all of it again, a stall of tens of
    milliseconds for every stream. The youngest objects are collected after 10,000 net
    allocations instead of 700, so most of a token's short-lived objects are freed by their
    reference counts before a pass has to visit them: in bench a, the collector's time fell
    from ≈ 1.3 s to ≈ 0.2 s and its longest pause from 250 ms to ≈ 60 ms. The middle generation
    is passed over ten times less often than by default (``GC_MIDDLE_THRESHOLD``).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, gc.get_threshold()[2])


def serve_gateway(
    host: str, port: int, log_level: str = "info", sock: socket.socket | None = None
) -> None:
    """Build the gateway from the environment and serve it until a stop signal, on ``sock``
    (a listening socket shared by several workers, see :mod:`gateway.workers`) if given, else
    on a socket of its own bound to ``host:port``.

    Request headers must arrive within ``HEADER_TIMEOUT`` seconds (0: no limit), see
    :mod:`gateway.header_timeout`.
    """
    app = create_app()
    tune_garbage_collector()
    settings: Settings = app.state.settings
    http: str | type[asyncio.Protocol] = "httptools"
    if settings.header_timeout > 0:
        http = header_timeout_protocol(settings.header_timeout)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=http,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    DrainingServer(config, app).run(sockets=None if sock is None else [sock])
