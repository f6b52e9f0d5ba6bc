"""Serving a task's log as Server-Sent Events (DESIGN §5).

Each connection is an independent reader of the log: it replays after its cursor, then tails.
A reader that cannot take data within ``send_timeout`` is disconnected (it resumes later with
``Last-Event-ID``); nothing a reader does can slow the task or another reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import anyio
from starlette.types import Receive, Scope, Send

from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from gateway.store import StreamStore, TaskNotFound

logger = logging.getLogger(__name__)

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]
HEARTBEAT = b": ping\n\n"


class SlowClient(Exception):
    """The client did not take a frame within the send time limit."""


class LogStream:
    """An ASGI response streaming ``task_id``'s log after ``after`` until its ``finish``."""

    def __init__(
        self,
        store: StreamStore,
        task_id: str,
        after: int,
        settings: Settings,
        metrics: GatewayMetrics,
        headers: Mapping[str, str] | None = None,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        draining: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.task_id = task_id
        self.after = after
        self.settings = settings
        self.metrics = metrics
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.on_disconnect = on_disconnect
        self.draining = draining
        self.finished = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.metrics.active_streams.inc()
        self.metrics.streams_total.inc()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": SSE_HEADERS + self.extra_headers,
                }
            )
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                if self.draining is not None:
                    group.start_soon(self._watch_drain, self.draining, group.cancel_scope)
                try:
                    await self._pump(send)
                except SlowClient:
                    self.metrics.slow_clients.inc()
                    logger.info("SSE reader of %s too slow; disconnected", self.task_id)
                    group.cancel_scope.cancel()
                    return
                group.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return  # the peer is gone
        finally:
            self.metrics.active_streams.dec()

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if not self.finished and self.on_disconnect is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.cancel_wait):
                await self.on_disconnect()
        scope.cancel()

    async def _watch_drain(self, draining: asyncio.Event, scope: anyio.CancelScope) -> None:
        await draining.wait()
        scope.cancel()  # end cleanly; the client resumes on another replica

    async def _send(self, send: Send, body: bytes) -> None:
        with anyio.move_on_after(self.settings.send_timeout) as timer:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if timer.cancelled_caught:
            raise SlowClient(self.task_id)

    async def _pump(self, send: Send) -> None:
        settings = self.settings
        cursor = self.after
        deadline = anyio.current_time() + settings.sse_max_age
        await self._send(send, b"retry: %d\n\n" % settings.sse_retry_ms)
        while True:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return  # SSE_MAX_AGE: end cleanly, the client resumes with Last-Event-ID
            try:
                messages = await self.store.tail(
                    self.task_id, cursor, min(settings.heartbeat_interval, remaining)
                )
            except TaskNotFound:
                return
            if not messages:
                if deadline - anyio.current_time() > 0:
                    await self._send(send, HEARTBEAT)
                continue
            last = messages[-1]
            await self._send(
                send, last.frame if len(messages) == 1 else b"".join(m.frame for m in messages)
            )
            cursor = last.seq
            if last.finish:
                self.finished = True
                return
