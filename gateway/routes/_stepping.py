"""Coroutines stepped by hand for the SSE streams (``routes/sse.py``).

A parked stream's client ``receive`` is watched from its futures' done-callbacks instead of a
task per stream (:class:`DisconnectWatch`); a pushed frame's ASGI ``send`` is started and
stepped once in the log's appender (:class:`Live`), and a send that has to wait is carried on
by the stream's task (:class:`Resume`). Both step a coroutine with ``send``/``throw`` as an
asyncio task would, and so rely on asyncio's private await protocol: a coroutine suspended on
a future yields it with ``_asyncio_future_blocking`` set, which the stepper clears before it
adds its done-callback (as ``Task.__step`` does); a bare yield means "run again next turn".

This is the one place the gateway steps coroutines itself. It stays because it pays: without it
(and ``routes/_direct.py``, uvicorn's cycle, that goes with it) ``python -m bench.ab`` at 200
streams by 200 tokens read +15 to 20 % CPU per token and twice the lag p99 (``bench/README.md``,
"Issue 21 part 2").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol

from starlette.types import Message, Receive, Send

from gateway.protocol import StoredMessage
from gateway.routes._direct import direct_cycle, write_chunk


class DisconnectWatch:
    """Reads ``receive`` until ``http.disconnect``, then calls ``on_end(None)`` once.

    A task per stream waiting in ``receive()`` (the task, its frame, its entry in the loop's
    task set) was the dearest object of an idle connection after the middleware chain. An
    ASGI server's ``receive()`` awaits futures (uvicorn, httpx's transport), so the coroutine
    is stepped here from its futures' done-callbacks, as a task would step it. If ``receive``
    raises instead, ``on_end`` gets the error (also kept in ``error``).
    """

    __slots__ = ("_coro", "_loop", "_on_end", "_receive", "error")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receive,
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        self._loop = loop
        self._receive = receive
        self._on_end = on_end
        self.error: BaseException | None = None
        self._coro: Coroutine[Any, Any, Message] | None = receive()  # type: ignore[assignment]
        self._step(None)

    def _step(self, _: object) -> None:
        while (coro := self._coro) is not None:
            try:
                waiting = coro.send(None)
            except StopIteration as stop:
                if stop.value["type"] == "http.disconnect":
                    self._end(None)
                else:  # the request body (already read by the route): read on
                    self._coro = self._receive()  # type: ignore[assignment]
                continue
            except (Exception, asyncio.CancelledError) as exc:
                self._end(exc)
                continue
            if waiting is None:  # a bare yield: run again on the next loop iteration
                self._loop.call_soon(self._step, None)
            else:
                waiting._asyncio_future_blocking = False
                waiting.add_done_callback(self._step)
            return

    def _end(self, error: BaseException | None) -> None:
        self._coro = None
        self.error = error
        self._on_end(error)

    def close(self) -> None:
        """Stop reading (the receive coroutine is closed where it waits)."""
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()


class Parked(Protocol):
    """What a park reads of its stream (``sse.LogStream``)."""

    _stopped: bool
    _head: bytes
    _loop: asyncio.AbstractEventLoop

    def _with_head(self, body: bytes) -> bytes: ...


class Live:
    """One park of a caught-up ``LogStream`` on its task's log (``LocalLog.park``).

    ``push`` runs in the appender, once per message: it writes the frame to uvicorn's transport
    (``_direct``), or else starts the ASGI send of the frame and steps it once. A server's send
    returns without waiting unless the client's buffer is full; then the started send is left
    in ``waiting`` for the stream's task to finish (under the send limit), and pushing ends. So
    the appender never waits for a client, and frames go out in order: nothing else sends while
    the stream is parked. The finish is not pushed: it ends the park, and the stream's task
    sends it with the end of the response (one write for both).
    """

    __slots__ = ("cursor", "cycle", "error", "finish", "send", "sent_at", "stream", "waiting")

    def __init__(self, stream: Parked, send: Send, cursor: int) -> None:
        self.stream = stream
        self.send = send
        self.cycle = direct_cycle(send)  # uvicorn's, to write frames without ``send``
        self.cursor = cursor
        self.sent_at: float | None = None
        self.finish: bytes | None = None  # the finish's frame, for the stream's task to send
        self.error: BaseException | None = None
        self.waiting: tuple[Coroutine[Any, Any, None], Any] | None = None

    def push(self, message: StoredMessage) -> bool:
        stream = self.stream
        if stream._stopped or message.seq != self.cursor + 1:
            return False
        self.cursor = message.seq
        frame = message.frame
        if message.finish:
            self.finish = frame
            return False
        if stream._head:  # the first chunk of the response
            frame = stream._with_head(frame)
        if self.cycle is not None and write_chunk(self.cycle, frame):
            self.sent_at = stream._loop.time()
            return True
        body = {"type": "http.response.body", "body": frame, "more_body": True}
        coro: Coroutine[Any, Any, None] = self.send(body)  # type: ignore[assignment]
        try:
            waiting = coro.send(None)
        except StopIteration:
            self.sent_at = stream._loop.time()
            return True
        except BaseException as exc:  # raised in the stream's task instead
            self.error = exc
            return False
        self.waiting = (coro, waiting)
        return False

    def close(self) -> None:
        """The stream ends without finishing a waiting send (it was cancelled)."""
        if self.waiting is not None:
            self.waiting[0].close()
            self.waiting = None


class Resume:
    """Await a coroutine that was started elsewhere and is suspended on ``waiting``."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:  # delivered to the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting = coro.send(value)
            except StopIteration:
                return
