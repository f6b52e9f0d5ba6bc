"""A task's write side in this process for ``RedisStore``: the messages waiting for their
flush, and the log of those Redis has acknowledged (what readers are served from)."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.protocol import StoredMessage
from gateway.store._log import LocalLog


class _Writer:
    """This process's write side of one task's log: ``pending`` messages wait for their
    flush, ``log`` holds the durable ones (``flushed_seq`` = ``log.last_seq``, the mark)."""

    __slots__ = (
        "closing",
        "ended_as",
        "epoch",
        "final",
        "final_sent",
        "flushed_seq",
        "log",
        "lost",
        "moved",
        "owner",
        "pending",
        "resp",
        "score",
        "sent",
        "waiters",
    )

    def __init__(self, base: int, owner: str, score: float) -> None:
        self.log = LocalLog(base)
        self.owner = owner
        self.score = score
        self.flushed_seq = base
        self.pending: list[StoredMessage] = []
        # the finish's script arguments: status, endedAt, error json, result, ttl, message data
        self.final: list[bytes] | None = None
        self.ended_as: bytes | None = None  # the final status, once Redis holds it
        self.lost: str | None = None
        self.closing: StoredMessage | None = None
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.moved: asyncio.Future[None] | None = None  # the claim's index move, in flight
        self.resp: tuple[bytes, bytes] | None = None  # keys and owner as RESP, once flushed
        self.sent = 0  # pending messages in a flush in flight (the first ones)
        self.final_sent = False  # the final fields are in a flush in flight
        self.epoch = 0  # bumped when its flushes in flight no longer count (see Flusher)

    @property
    def last_seq(self) -> int:
        """The seq of the last message appended (durable or not)."""
        return self.flushed_seq + len(self.pending)

    def made_durable(self, messages: list[StoredMessage]) -> None:
        """Hand ``messages``, just acknowledged by Redis, to the log's readers (unless a third
        party's write already ended or moved past this log: its readers then go to Redis)."""
        log = self.log
        if messages and not log.finished and messages[0].seq == log.last_seq + 1:
            log.extend(messages)

    async def index_moved(self) -> None:
        """Wait for the claim's move between the listing indexes (a later move must follow it)."""
        if self.moved is not None:
            with contextlib.suppress(Exception):
                await self.moved

    def settle(self, upto: int, error: Exception | None = None) -> None:
        """Resolve the waiters whose seq is durable (or fail them all with ``error``)."""
        if not self.waiters:
            return
        keep = []
        for seq, fut in self.waiters:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            elif seq <= upto:
                fut.set_result(None)
            else:
                keep.append((seq, fut))
        self.waiters = keep


class LostWriter(Exception):
    """Redis refused this process's writes for a task (ended elsewhere or lease lost)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
