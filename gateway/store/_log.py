"""An in-process log of one task's messages with a broadcast wake-up for its readers."""

from __future__ import annotations

import asyncio

from gateway.protocol import StoredMessage


class LocalLog:
    """Messages ``base+1 .. last_seq`` of one task, in memory.

    Readers wait on one shared event that is set and replaced on every append, so a single
    append wakes every reader at once and no reader is ever handed data by the writer.
    """

    __slots__ = ("_event", "base", "finished", "messages")

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.messages: list[StoredMessage] = []
        self.finished = False
        self._event = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self.base + len(self.messages)

    def add(self, message: StoredMessage) -> None:
        """Append ``message`` (its seq must be ``last_seq + 1``) and wake the readers."""
        self.messages.append(message)
        if message.finish:
            self.finished = True
        self.wake()

    def wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def covers(self, after: int) -> bool:
        """Whether messages after ``after`` can be served from memory."""
        return after >= self.base

    def since(self, after: int, limit: int) -> list[StoredMessage]:
        start = after - self.base
        return self.messages[start : start + limit]

    async def wait_beyond(self, after: int, timeout: float) -> bool:
        """Wait until a message after ``after`` exists (or the log ends); False on timeout."""
        if self.last_seq > after or self.finished:
            return True
        try:
            async with asyncio.timeout(timeout):
                while self.last_seq <= after and not self.finished:
                    await self._event.wait()
        except TimeoutError:
            return False
        return True
