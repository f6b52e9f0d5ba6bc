"""Serving a task's log as Server-Sent Events (DESIGN §5).

Each connection is an independent reader of the log: it replays after its cursor, then tails.
A reader that cannot take data within ``send_timeout`` is disconnected (it resumes later with
``Last-Event-ID``); nothing a reader does can slow the task or another reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.types import Receive, Scope, Send

from gateway.drain import Drain
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
    """An ASGI response streaming ``task_id``'s log after ``after`` until its ``finish``.

    An idle connection costs one parked reader and one task waiting for the client's
    disconnect: the drain and the send time limit are callbacks, not tasks, and ending the
    stream early (disconnect, drain, slow client) cancels the pumping task itself.
    """

    def __init__(
        self,
        store: StreamStore,
        task_id: str,
        after: int,
        settings: Settings,
        metrics: GatewayMetrics,
        headers: Mapping[str, str] | None = None,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        draining: Drain | None = None,
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
        self._pumping: asyncio.Task[object] | None = None
        self._stopped = False
        self._disconnected = False
        self._sending_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._slow = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.metrics.active_streams.inc()
        self.metrics.streams_total.inc()
        watcher: asyncio.Task[None] | None = None
        unsubscribe = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": SSE_HEADERS + self.extra_headers,
                }
            )
            self._pumping = asyncio.current_task()
            watcher = self._loop.create_task(self._watch_disconnect(receive))
            if self.draining is not None:
                # End cleanly on a drain: the client resumes on another replica.
                unsubscribe = self.draining.subscribe(self._stop)
            try:
                await self._pump(send)
            except asyncio.CancelledError:
                if not self._stopped or self._uncancel() > 0:
                    raise  # cancelled from outside (server shutdown), not by this stream
            finally:
                self._pumping = None  # from here on a stop cancels nothing
            if self._slow:
                self.metrics.slow_clients.inc()
                logger.info("SSE reader of %s too slow; disconnected", self.task_id)
                return  # no final chunk: the client cannot take data
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return  # the peer is gone
        finally:
            self._pumping = None
            if unsubscribe is not None:
                unsubscribe()
            if watcher is not None:
                await self._end_watcher(watcher)
            if self._watchdog is not None:
                self._watchdog.cancel()
            self.metrics.active_streams.dec()

    def _stop(self) -> None:
        """End the stream now (once): cancels the pumping task, which then ends cleanly."""
        if not self._stopped and self._pumping is not None:
            self._stopped = True
            self._pumping.cancel()

    def _uncancel(self) -> int:
        task = asyncio.current_task()
        return task.uncancel() if task is not None else 0

    async def _end_watcher(self, watcher: asyncio.Task[None]) -> None:
        """Stop watching; a disconnect callback already running is let finish (bounded)."""
        if not watcher.done() and not self._disconnected:
            watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    async def _watch_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        self._disconnected = True
        if not self.finished and self.on_disconnect is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.cancel_wait):
                    await self.on_disconnect()
        self._stop()

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
            self._stop()
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
