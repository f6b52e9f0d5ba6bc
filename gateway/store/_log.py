"""An in-process log of one task's messages with a broadcast wake-up for its readers."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import math
from collections.abc import Callable

from gateway.protocol import StoredMessage

Push = Callable[[StoredMessage], bool]
"""Takes the next message of the log as it is added; False ends the pushing (see ``park``)."""

#: Readers of one log that push at once. A push writes the frame as the message is added;
#: readers that wait their turn instead write whatever has come by then in one go, which
#: costs less when many read one task (fan-out) or the process is saturated.
MAX_PUSHING = 4

#: A waiter whose deadline is this close is released (loop timers have millisecond grain).
_SLACK = 0.001


class LocalLog:
    """Messages ``base+1 .. last_seq`` of one task, in memory.

    Each waiting reader parks one future; an append resolves them all at once, so a single
    append wakes every reader and no reader is ever handed data by the writer.

    Time limits cost no timer per wait (a timer is the dearest thing a hot loop can create):
    one timer per log is armed at the earliest deadline among the waiters and, when it fires,
    releases the expired ones (taken off a heap of deadlines, so ten thousand idle readers cost
    no scan of all of them) and re-arms itself for the next. A reader woken by data every few
    milliseconds therefore never touches a timer; the log's timer fires about once per timeout.

    A reader that has caught up can also ``park`` with a push callback: each message is then
    handed to it as it is added, by the appender, and the reader's task is not woken at all
    (a live SSE stream writes its frame from there). The time limits are kept the same way.
    """

    __slots__ = (
        "_deadlines",
        "_parked",
        "_pushers",
        "_releases",
        "_seqs",
        "_timer",
        "_timer_at",
        "_waiters",
        "base",
        "finished",
        "messages",
    )

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.messages: list[StoredMessage] = []
        self.finished = False
        self._seqs: list[int] | None = None  # the seqs of ``messages`` once it has holes
        self._waiters: set[asyncio.Future[None]] = set()
        self._pushers: dict[asyncio.Future[None], Push] = {}
        self._parked: list[tuple[float, int, asyncio.Future[None]]] = []  # the pushers' deadlines
        # (deadline, tiebreak, future): a future already resolved or gone is skipped when met
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._releases = 0

    def parkable(self, after: int) -> bool:
        """Whether a reader that has read up to ``after`` may ``park`` now: it has read all
        there is, the log goes on, and fewer than ``MAX_PUSHING`` readers push already."""
        return not self.finished and self.last_seq == after and len(self._pushers) < MAX_PUSHING

    @property
    def last_seq(self) -> int:
        seqs = self._seqs
        if seqs is None:
            return self.base + len(self.messages)
        return seqs[-1] if seqs else self.base

    def add(self, message: StoredMessage) -> None:
        """Append ``message`` (its seq must be ``last_seq + 1``), push it, wake the readers."""
        self.messages.append(message)
        if self._seqs is not None:
            self._seqs.append(message.seq)
        if message.finish:
            self.finished = True
        pushers = self._pushers
        if pushers:
            for future, push in list(pushers.items()):
                if future.done() or not push(message):
                    del pushers[future]
                    if not future.done():
                        future.set_result(None)
        if self._waiters or self.finished:
            self.wake()

    def extend(self, messages: list[StoredMessage]) -> None:
        """Append ``messages`` (consecutive, from ``last_seq + 1``) as one step: each is pushed
        in order, and the waiting readers are woken once for all of them."""
        if len(messages) <= 1:
            if messages:
                self.add(messages[0])
            return
        self.messages += messages
        if self._seqs is not None:
            self._seqs += [m.seq for m in messages]
        if messages[-1].finish:
            self.finished = True
        pushers = self._pushers
        if pushers:
            for future, push in list(pushers.items()):
                for message in messages:
                    if future.done() or not push(message):
                        del pushers[future]
                        if not future.done():
                            future.set_result(None)
                        break
        if self._waiters or self.finished:
            self.wake()

    def wake(self) -> None:
        """Resolve every waiting reader (new data, or the log ended)."""
        waiters = self._waiters
        if waiters:
            self._waiters = set()
            self._deadlines = []
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        if self.finished:
            self._unpark()

    def release(self) -> None:
        """End every current wait now, with or without new data (readers should look elsewhere)."""
        self._releases += 1
        self.wake()
        self._unpark()

    def _unpark(self) -> None:
        pushers, self._pushers = self._pushers, {}
        for future in pushers:
            if not future.done():
                future.set_result(None)

    async def park(self, push: Push, timeout: float) -> None:
        """Hand each message added from now on to ``push`` (called by the appender; it must not
        raise) until it returns False, the log ends or is released, or ``timeout`` passes.
        The caller must have read up to ``last_seq``."""
        if self.finished:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pushers[future] = push
        self._enlist(loop, self._parked, loop.time() + timeout, future)
        try:
            await future
        finally:
            self._pushers.pop(future, None)

    def covers(self, after: int) -> bool:
        """Whether messages after ``after`` can be served from memory."""
        return after >= self.base

    def since(self, after: int, limit: int) -> list[StoredMessage]:
        seqs = self._seqs
        start = after - self.base if seqs is None else bisect.bisect_right(seqs, after)
        return self.messages[start : start + limit]

    def retain(self, messages: list[StoredMessage], base: int) -> None:
        """Keep only ``messages`` (some of those held, in order, the last one among them) and
        forget all before ``base``: retention (``gateway.store._retention``); ``since`` then
        skips the seqs left out."""
        self.messages = messages
        self.base = base
        self._seqs = [m.seq for m in messages]

    async def wait_beyond(self, after: int, timeout: float) -> bool:
        """Wait until a message after ``after`` exists (or the log ends); False on timeout."""
        if self.last_seq > after or self.finished:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        releases = self._releases
        while True:
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.add(future)
            self._enlist(loop, self._deadlines, deadline, future)
            try:
                await future
            finally:
                self._waiters.discard(future)  # gone already unless cancelled or expired
            if self.last_seq > after or self.finished:
                return True
            if loop.time() >= deadline - _SLACK or self._releases != releases:
                return False

    def _enlist(
        self,
        loop: asyncio.AbstractEventLoop,
        heap: list[tuple[float, int, asyncio.Future[None]]],
        deadline: float,
        future: asyncio.Future[None],
    ) -> None:
        """Put ``future``'s deadline on ``heap``; the log's timer resolves it then."""
        heapq.heappush(heap, (deadline, id(future), future))
        if deadline < self._timer_at:
            self._arm(loop, deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        limit = loop.time() + _SLACK
        for heap in (self._deadlines, self._parked):
            # an entry already resolved (woken, pushed to the end) is dropped when met
            while heap and (heap[0][0] <= limit or heap[0][2].done()):
                future = heapq.heappop(heap)[2]
                if not future.done():
                    self._waiters.discard(future)
                    future.set_result(None)
        due = [heap[0][0] for heap in (self._deadlines, self._parked) if heap]
        if due:
            self._arm(loop, min(due))
