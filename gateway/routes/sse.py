"""Serving a task's log as Server-Sent Events (DESIGN §5).

Each connection is an independent reader of the log: it replays after its cursor, then tails.
A reader that cannot take data within ``send_timeout`` is disconnected (it resumes later with
``Last-Event-ID``); nothing a reader does can slow the task or another reader. The coroutines
stepped by hand are in ``_stepping``, the send time limit in ``_send_watch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.drain import Drain
from gateway.metrics import GatewayMetrics
from gateway.protocol import StoredMessage
from gateway.routes._send_watch import send_watch
from gateway.routes._stepping import DisconnectWatch, Live, Resume
from gateway.store import StreamStore, TaskNotFound, replay

logger = logging.getLogger(__name__)

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]
HEARTBEAT = b": ping\n\n"
#: Messages per chunk of a compacted replay.
REPLAY_BATCH = 500


#: The scope key of the list a :class:`LogStream` leaves itself in for :class:`StreamHost`.
HOSTED = "gateway.hosted_streams"


class StreamHost:
    """ASGI middleware around all others: pumps SSE streams once the chain has returned.

    An idle stream used to keep the whole chain suspended under it — each middleware's
    frame, the router's, the endpoint wrappers' and two ``Request`` objects: most of the
    memory an idle connection cost. A :class:`LogStream` sends its response start through
    the chain (so middleware still see and amend it: CORS, owner records, webhooks), then
    leaves itself here and returns; the chain unwinds and this host pumps the body with the
    server's own ``receive`` and ``send``. So middleware inside the host see a stream's
    response start but not its body chunks: none of ours needs them (none rewrites a body,
    and the routes have read the request body by then).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosted: list[LogStream] = []
        scope[HOSTED] = hosted
        await self.app(scope, receive, send)
        if hosted:
            await hosted[0].serve(receive, send)


@dataclasses.dataclass(frozen=True, slots=True)
class StreamSettings:
    """What the SSE routes read of the environment; ``app`` builds it (DESIGN §9).

    A heartbeat comment every ``heartbeat_interval`` s (``compat_heartbeat_interval`` on the
    compat routes); a stream ends after ``sse_max_age`` s (the client resumes); ``retry:`` is
    ``sse_retry_ms``; a client that takes ``send_timeout`` s over one write is dropped; a
    cancel on disconnect waits up to ``cancel_wait`` s.
    """

    heartbeat_interval: float = 15.0
    sse_max_age: float = 3600.0
    sse_retry_ms: int = 3000
    send_timeout: float = 10.0
    cancel_wait: float = 10.0
    compat_heartbeat_interval: float = 10.0


class LogStream:
    """An ASGI response streaming ``task_id``'s log after ``after`` until its ``finish``.

    An idle connection costs one parked reader, a watch of the client's ``receive`` driven by
    callbacks, and (under :class:`StreamHost`) no middleware frames: the drain, the send time
    limit and the disconnect are callbacks, not tasks, and ending the stream early
    (disconnect, drain, slow client) cancels the pumping task itself.
    """

    __slots__ = (
        "_disconnected",
        "_ended",
        "_head",
        "_loop",
        "_pumping",
        "_slow",
        "_stopped",
        "_watch",
        "after",
        "draining",
        "extra_headers",
        "finished",
        "metrics",
        "on_disconnect",
        "settings",
        "store",
        "task_id",
    )

    def __init__(
        self,
        store: StreamStore,
        task_id: str,
        after: int,
        settings: StreamSettings,
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
        self._watch = send_watch(self._loop, settings.send_timeout)
        self._slow = False
        self._head = b""  # written before the next chunk (``_pump``'s retry line)
        self._ended = False  # the last chunk went out with the finish (one write for both)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": SSE_HEADERS + self.extra_headers,
                }
            )
        except OSError:
            return  # the peer is gone
        hosted: list[LogStream] | None = scope.get(HOSTED)
        if hosted is not None:
            hosted.append(self)  # the host serves it, off the middleware chain
            return
        await self.serve(receive, send)

    async def serve(self, receive: Receive, send: Send) -> None:
        """Pump the body (after the response start) until the end, a stop or a disconnect."""
        self.metrics.active_streams.inc()
        self.metrics.streams_total.inc()
        self._pumping = asyncio.current_task()
        reading = DisconnectWatch(self._loop, receive, self._on_receive_end)
        self._watch.opened()
        try:
            if self.draining is not None:
                # End cleanly on a drain: the client resumes on another replica.
                self.draining.subscribe(self._stop)
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
            if not self._ended:
                body = self._with_head(b"")
                await send({"type": "http.response.body", "body": body, "more_body": False})
        except OSError:
            return  # the peer is gone
        finally:
            if self.draining is not None:
                self.draining.unsubscribe(self._stop)
            self._watch.closed()
            reading.close()
            self.metrics.active_streams.dec()
            await self._after_disconnect()
            if reading.error is not None:
                raise reading.error

    def _on_receive_end(self, error: BaseException | None) -> None:
        # A failing receive ends the stream too (it could not see a disconnect any more);
        # its error is raised when the stream has ended.
        self._disconnected = error is None
        self._stop()

    async def _after_disconnect(self) -> None:
        """Run ``on_disconnect`` if the client left before the end (bounded)."""
        if self._disconnected and not self.finished and self.on_disconnect is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.cancel_wait):
                    await self.on_disconnect()

    def _stop(self) -> None:
        """End the stream now (once): cancels the pumping task, which then ends cleanly."""
        if not self._stopped and self._pumping is not None:
            self._stopped = True
            self._pumping.cancel()

    def _uncancel(self) -> int:
        task = asyncio.current_task()
        return task.uncancel() if task is not None else 0

    async def _send(self, send: Send, body: bytes, more_body: bool = True) -> None:
        """Send one chunk under the send time limit (kept by the loop's ``SendWatch``);
        ``more_body=False`` sends it with the end of the response, in one write."""
        if self._head:
            body = self._with_head(body)
        sending = self._watch.sending
        sending[self] = self._loop.time()
        try:
            await send({"type": "http.response.body", "body": body, "more_body": more_body})
        finally:
            sending.pop(self, None)
        self._ended = not more_body

    def _with_head(self, body: bytes) -> bytes:
        """``body`` after what has to go before the next chunk (the retry line), once."""
        head, self._head = self._head, b""
        return head + body if head else body

    async def _finish(self, send: Send, body: bytes) -> None:
        """Send the last frames (the finish) together with the end of the response."""
        self.finished = True
        await self._send(send, body, more_body=False)

    def cut_off(self) -> None:
        """The client took no data for the send time limit: end the stream (it resumes later)."""
        self._slow = True
        self._stop()

    async def _pump(self, send: Send) -> None:
        """Replay, then tail; a heartbeat whenever nothing was sent for ``heartbeat_interval``.

        Caught up with a log this process writes, the stream parks on it (``_stepping.Live``): the
        appender writes each new frame, and this task wakes only for a heartbeat, the end, or a
        send that has to wait for the client.

        Heartbeats keep to a fixed beat (each one due an interval after the previous one was
        due, not after it was sent): when thousands of idle streams ping at once and the last
        of them goes out late, its next ping is not pushed later still.
        """
        settings = self.settings
        store = self.store
        task_id = self.task_id
        heartbeat = settings.heartbeat_interval
        clock = self._loop.time
        cursor = self.after
        deadline = clock() + settings.sse_max_age
        # The retry line goes out with the first frame (or heartbeat, or the end of the
        # response), not in a socket write of its own.
        self._head = b"retry: %d\n\n" % settings.sse_retry_ms
        ping_at = clock() + heartbeat
        cursor = await self._replay(send, cursor)
        if self.finished:
            return
        while True:
            now = clock()
            if deadline - now <= 0:
                return  # SSE_MAX_AGE: end cleanly, the client resumes with Last-Event-ID
            wait = max(0.0, min(ping_at, deadline) - now)
            log = store.live_log(task_id, cursor) if wait > 0 else None
            if log is not None:
                live = Live(self, send, cursor)
                try:
                    await log.park(live.push, wait)
                except BaseException:
                    live.close()
                    raise
                cursor = live.cursor
                if live.waiting is not None:  # a pushed frame waits for the client's buffer
                    await self._resume_send(*live.waiting)
                    live.sent_at = clock()
                if live.error is not None:
                    raise live.error
                if live.finish is not None:
                    await self._finish(send, live.finish)
                    return
                if live.sent_at is not None:
                    ping_at = live.sent_at + heartbeat
                messages: list[StoredMessage] = []
            else:
                try:
                    messages = await store.tail(task_id, cursor, wait)
                    if messages and messages[0].seq > cursor + 1:  # dropped: compacted, or gone?
                        if cursor < await store.floor(task_id):  # gone: a reset, not a gap
                            cursor = await self._replay(send, cursor)
                            if self.finished:
                                return
                            continue
                except TaskNotFound:
                    return
            if not messages:
                now = clock()
                if now >= ping_at - 0.001 and deadline - now > 0:
                    await self._send(send, HEARTBEAT)
                    ping_at = max(ping_at + heartbeat, now + heartbeat / 2)
                continue
            last = messages[-1]
            # Frames are encoded once per message and shared by every reader (cached).
            body = last.frame if len(messages) == 1 else b"".join(m.frame for m in messages)
            if last.finish:
                await self._finish(send, body)
                return
            await self._send(send, body)
            ping_at = clock() + heartbeat
            cursor = last.seq

    async def _replay(self, send: Send, cursor: int) -> int:
        """Send the history after ``cursor`` compacted (DESIGN §5); the new cursor. The tail
        that follows (``_pump``) is live, token by token."""
        while True:
            try:
                frames = await replay(self.store, self.task_id, cursor, REPLAY_BATCH)
            except TaskNotFound:
                return cursor
            if not frames:
                return cursor
            body = b"".join(m.frame for m in frames)
            if frames[-1].finish:
                await self._finish(send, body)
                return frames[-1].seq
            await self._send(send, body)
            cursor = frames[-1].seq
            if len(frames) < REPLAY_BATCH:
                return cursor

    async def _resume_send(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        """Carry on a send the log's appender started, under the send time limit."""
        sending = self._watch.sending
        sending[self] = self._loop.time()
        try:
            await Resume(coro, waiting)
        finally:
            sending.pop(self, None)
