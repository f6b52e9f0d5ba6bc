"""Bounded retention (DESIGN §5, §7): each task's log kept within ``log_max_bytes``.

When a task's retained log grows over the bound, a pass drops, oldest first:

1. the deltas of messages whose final frame is durable, all of them — compaction at rest: a
   replay skips them anyway (:mod:`gateway.protocol.compaction`), so no reader loses anything;
   then, only if the log is still over ``LOW_WATER`` of the bound,
2. the oldest messages, raising the task's *floor*: every message up to the floor is gone, so a
   cursor below it cannot resume exactly and is given a ``reset`` with the snapshot instead
   (:func:`gateway.store._replay.replay`); a cursor at or above it resumes exactly.

A pass brings the log down to ``LOW_WATER`` of the bound at most, so one runs per quarter of
the bound appended or less. The last message is always kept. ``MemoryStore`` runs a pass as
it appends; ``RedisStore`` runs it in the background (:class:`RedisRetention`), deleting
stream entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.protocol import StoredMessage
from gateway.protocol.compaction import heads
from gateway.store._log import LocalLog

logger = logging.getLogger(__name__)

LOW_WATER = 0.75


def plan(messages: Sequence[StoredMessage], max_bytes: int) -> tuple[list[StoredMessage], int]:
    """The messages of a log (all durable, in order) to keep within ``max_bytes``, and the new
    floor (0: none raised): see the module docstring."""
    total = sum(len(m.data) for m in messages)
    target = int(max_bytes * LOW_WATER)
    if total <= max_bytes:
        return list(messages), 0
    parsed = list(heads(messages))
    finals = {mid for mid, final in parsed if final and mid is not None}
    dropped: set[int] = set()
    for message, (mid, final) in zip(messages, parsed, strict=True):
        if not final and mid in finals:
            dropped.add(message.seq)
            total -= len(message.data)
    floor = 0
    for message in messages[:-1]:
        if total <= target:
            break
        if message.seq not in dropped:  # (a compacted delta below it raises no floor)
            dropped.add(message.seq)
            total -= len(message.data)
            floor = message.seq
    return [m for m in messages if m.seq not in dropped], floor


# KEYS: state, log. ARGV: floor, then the stream ids to delete. Raises the floor (never lowers
# it) and deletes, unless the task is gone. Returns 1 if done.
TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 500 do
  redis.call('XDEL', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
if tonumber(ARGV[1]) > floor then redis.call('HSET', KEYS[1], 'floor', ARGV[1]) end
return 1
"""

READ_COUNT = 10_000


class RedisRetention:
    """The retention passes of the tasks a ``RedisStore`` writes: it counts the bytes each task
    appends here (:meth:`count`) and, over the bound, trims the task's Redis Stream in a task of
    its own (one at a time per task), awaited by :meth:`close`; then ``on_trim`` lets the store
    trim what it holds of the log in memory the same way."""

    def __init__(
        self,
        client: Any,
        keys: Callable[[str], list[str]],
        parse: Callable[[list[Any]], list[StoredMessage]],
        max_bytes: int,
        on_trim: Callable[[str, set[int], int], None],
        flushed: Callable[[str], Awaitable[None]],
    ) -> None:
        self.max_bytes = max_bytes
        self._client = client
        self._keys = keys
        self._parse = parse
        self._on_trim = on_trim  # (task id, seqs dropped, floor): the store's copies follow
        self._flushed = flushed  # waits until what the task's writer holds is durable
        self._trim = client.register_script(TRIM)
        self._sizes: dict[str, int] = {}
        self._passes: dict[str, asyncio.Task[None]] = {}

    def count(self, task_id: str, size: int) -> None:
        """``size`` more bytes appended to ``task_id``'s log; starts a pass when over."""
        if not self.max_bytes:
            return
        total = self._sizes.get(task_id, 0) + size
        self._sizes[task_id] = total
        if total > self.max_bytes and task_id not in self._passes:
            task = asyncio.create_task(self._pass(task_id), name=f"retain-{task_id}")
            self._passes[task_id] = task
            task.add_done_callback(lambda _: self._passes.pop(task_id, None))

    def forget(self, task_id: str) -> None:
        """The task ended here: no more counting (its last pass, if any, goes on)."""
        self._sizes.pop(task_id, None)

    async def _pass(self, task_id: str) -> None:
        state, log = self._keys(task_id)
        try:
            await self._flushed(task_id)  # what was counted is in Redis: it is what is read
            messages: list[StoredMessage] = []
            start = "-"
            while True:
                entries = await self._client.xrange(log, start, "+", count=READ_COUNT)
                messages += self._parse(entries)
                if len(entries) < READ_COUNT:
                    break
                start = f"({messages[-1].seq}-0"
            keep, floor = plan(messages, self.max_bytes)
            kept = {m.seq for m in keep}
            gone = {m.seq for m in messages if m.seq not in kept}
            if gone:
                ids = [f"{seq}-0" for seq in sorted(gone)]
                await self._trim(keys=[state, log], args=[floor, *ids])
                self._on_trim(task_id, gone, floor)
            if task_id in self._sizes:
                self._sizes[task_id] = sum(len(m.data) for m in keep)
        except Exception:  # the next append over the bound tries again
            logger.exception("retention pass of %s failed", task_id)

    async def close(self) -> None:
        """Wait for the passes under way."""
        await asyncio.gather(*self._passes.values(), return_exceptions=True)


def retain_local(log: LocalLog, max_bytes: int) -> tuple[int, int]:
    """A pass over a log held in memory (``MemoryStore``): ``(floor, bytes kept)``."""
    keep, floor = plan(log.messages, max_bytes)
    log.retain(keep, max(log.base, floor))
    return floor, sum(len(m.data) for m in keep)
