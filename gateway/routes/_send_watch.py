"""The send time limit of the SSE streams (``routes/sse.py``): one periodic timer per loop."""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol


class Sender(Protocol):
    """A stream under the limit: cut off when one of its sends has been stuck too long."""

    def cut_off(self) -> None: ...


class SendWatch:
    """The send time limit of every stream of one event loop, kept by one periodic timer.

    A send almost never blocks (the server waits only when the socket buffer is full), so a
    cancel scope or timer per frame would be the dearest part of the hot path, and a timer per
    stream costs every idle connection memory. Here a send in progress is one dict entry, and
    one timer — armed while any stream is open — ticks a few times per time limit and cuts off
    the streams whose send has been stuck for ``timeout`` seconds (they resume later).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self.timeout = timeout
        self._tick_every = max(0.01, min(1.0, timeout / 4))
        self.sending: dict[Sender, float] = {}
        self._streams = 0
        self._timer: asyncio.TimerHandle | None = None

    def opened(self) -> None:
        self._streams += 1
        if self._timer is None:
            self._timer = self._loop.call_later(self._tick_every, self._tick)

    def closed(self) -> None:
        self._streams -= 1

    def _tick(self) -> None:
        now = self._loop.time()
        overdue = [s for s, since in self.sending.items() if now - since >= self.timeout - 0.001]
        for stream in overdue:
            del self.sending[stream]
            stream.cut_off()
        self._timer = (
            self._loop.call_later(self._tick_every, self._tick) if self._streams > 0 else None
        )


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, SendWatch]] = (
    weakref.WeakKeyDictionary()
)


def send_watch(loop: asyncio.AbstractEventLoop, timeout: float) -> SendWatch:
    """The watch of ``loop``'s streams with this time limit (one per loop and limit)."""
    per_timeout = _watches.setdefault(loop, {})
    watch = per_timeout.get(timeout)
    if watch is None:
        watch = per_timeout[timeout] = SendWatch(loop, timeout)
    return watch
