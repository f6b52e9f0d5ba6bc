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
    """The client did not take a frame within the send time limit (kept for importers)."""


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
        self._loop = asyncio.get_running_loop()
        self._scope: anyio.CancelScope | None = None
        self._sending_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._slow = False

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
                self._scope = group.cancel_scope
                group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                if self.draining is not None:
                    group.start_soon(self._watch_drain, self.draining, group.cancel_scope)
                await self._pump(send)
                group.cancel_scope.cancel()
            if self._slow:
                self.metrics.slow_clients.inc()
                logger.info("SSE reader of %s too slow; disconnected", self.task_id)
                return  # no final chunk: the client cannot take data
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return  # the peer is gone
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
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
        """Send one chunk under the send time limit.

        The limit is enforced by a watchdog timer, not a cancel scope per send: a send almost
        never blocks (the server only waits when the socket buffer is full), and a timer per
        frame would be the dearest part of the hot path. The watchdog is armed by the first
        send after it went quiet and re-arms itself only while a send is in progress.
        """
        loop = self._loop
        self._sending_since = now = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self.settings.send_timeout, self._check_send)
        await send({"type": "http.response.body", "body": body, "more_body": True})
        self._sending_since = None

    def _check_send(self) -> None:
        self._watchdog = None
        since = self._sending_since
        if since is None:
            return  # idle between sends: stay disarmed until the next send
        overdue = since + self.settings.send_timeout
        if self._loop.time() >= overdue - 0.001:
            self._slow = True  # a client that cannot take data is cut off (it resumes later)
            if self._scope is not None:
                self._scope.cancel()
            return
        self._watchdog = self._loop.call_at(overdue, self._check_send)

    async def _pump(self, send: Send) -> None:
        settings = self.settings
        store = self.store
        task_id = self.task_id
        heartbeat = settings.heartbeat_interval
        clock = self._loop.time
        cursor = self.after
        deadline = clock() + settings.sse_max_age
        await self._send(send, b"retry: %d\n\n" % settings.sse_retry_ms)
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return  # SSE_MAX_AGE: end cleanly, the client resumes with Last-Event-ID
            try:
                messages = await store.tail(task_id, cursor, min(heartbeat, remaining))
            except TaskNotFound:
                return
            if not messages:
                if deadline - clock() > 0:
                    await self._send(send, HEARTBEAT)
                continue
            last = messages[-1]
            # Frames are encoded once per message and shared by every reader (cached).
            await self._send(
                send, last.frame if len(messages) == 1 else b"".join(m.frame for m in messages)
            )
            cursor = last.seq
            if last.finish:
                self.finished = True
                return
