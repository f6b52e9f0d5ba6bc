"""``RedisStore``'s task logs: appends (coalesced by the flusher), the finish, reads, and tails
that wait on the log this process writes or on one shared follower of the task's stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

from gateway.protocol import (
    TERMINAL_STATUSES,
    StoredMessage,
    TaskError,
    TaskStatus,
    appended_message,
    encode_body,
    now_ms,
    stamp_seq,
)
from gateway.store import _scripts
from gateway.store._log import LocalLog
from gateway.store._pending import LostWriter, _Writer
from gateway.store._redis_core import RedisCore, _add_durable
from gateway.store._redis_parts import _Follower, _hash, _messages, _raise_if_cancelling, _record
from gateway.store.base import TaskEnded, TaskNotFound

logger = logging.getLogger(__name__)

RECENT_SECONDS = 60.0
"""Seconds the log of a task finished in this process is replayed from memory."""


class LogMixin(RedisCore):
    """Each task's log: written through per-task writers, read from memory or Redis."""

    async def _writer(self, task_id: str) -> _Writer:
        writer = self._writers.get(task_id)
        if writer is None:
            command = ("HMGET", self._k.state(task_id), "lastSeq", "score", "owner", "status")
            state = (await self._commands([command]))[0]
            if state[0] is None:
                raise TaskNotFound(task_id)
            if TaskStatus(state[3].decode()) in TERMINAL_STATUSES:
                raise TaskEnded(task_id)
            owner = state[2].decode() if state[2] else ""
            writer = _Writer(int(state[0]), owner, float(state[1] or 0))
            writer = self._writers.setdefault(task_id, writer)
        if writer.lost or writer.log.finished or writer.closing is not None:
            raise TaskEnded(task_id)
        return writer

    async def append(self, task_id: str, body: dict[str, Any] | bytes) -> StoredMessage:
        return self._add(task_id, await self._writer(task_id), body)

    def append_now(self, task_id: str, body: dict[str, Any] | bytes) -> StoredMessage | None:
        writer = self._writers.get(task_id)
        if writer is None:
            return None
        if writer.lost or writer.log.finished or writer.closing is not None:
            raise TaskEnded(task_id)
        return self._add(task_id, writer, body)

    def _add(self, task_id: str, writer: _Writer, body: dict[str, Any] | bytes) -> StoredMessage:
        # Not in the log yet: readers get it once its flush is acknowledged (see _writer).
        pending = writer.pending
        message = appended_message(writer.flushed_seq + len(pending) + 1, body)
        pending.append(message)
        self._flusher.mark(task_id, writer)
        return message

    async def finish(
        self,
        task_id: str,
        status: TaskStatus,
        body: dict[str, Any],
        *,
        error: TaskError | None = None,
        result: str | None = None,
        expect: frozenset[TaskStatus] | None = None,
    ) -> StoredMessage | None:
        body["finish"] = True
        error_json = orjson.dumps(error.to_json()).decode() if error else ""
        ended = now_ms()
        if expect is not None:
            return await self._finish_third_party(
                task_id, status, body, error_json, result, expect, ended
            )
        writer = await self._writer(task_id)
        seq = writer.last_seq + 1
        message = StoredMessage(seq, stamp_seq(seq, encode_body(body)), True)
        writer.final = [
            status.value.encode(),
            b"%d" % ended,
            error_json.encode(),
            (result or "").encode(),
            b"%d" % self.result_ttl,
            message.data,
        ]
        writer.closing = message  # readers see it once it is durable, with the final status
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writer.waiters.append((seq, done))
        self._flusher.mark(task_id, writer)
        try:
            await done
        except LostWriter as exc:
            raise TaskEnded(task_id) from exc
        return message

    async def _finish_third_party(
        self,
        task_id: str,
        status: TaskStatus,
        body: dict[str, Any],
        error_json: str,
        result: str | None,
        expect: frozenset[TaskStatus],
        ended: int,
    ) -> StoredMessage | None:
        writer = self._writers.get(task_id)
        if writer is not None:  # what this process already wrote goes first
            await self._flushed(writer)
        expected = "," + ",".join(s.value for s in expect) + ","
        try:
            command = (
                *("EVAL", _scripts.FINISH_IF, 2, *self._k.task(task_id), expected, status.value),
                *(ended, error_json, result or "", self.result_ttl, encode_body(body)),
            )
            reply = (await self._commands([command], repeatable=False))[0]
        except ResponseError as exc:
            if "NOTASK" in str(exc):
                raise TaskNotFound(task_id) from exc
            raise
        if reply is None:
            return None
        seq, data, old = int(reply[0]), reply[1], reply[2].decode()
        writer = self._writers.pop(task_id, None)
        if writer is not None:  # this process was writing it: its readers must see the end
            writer.lost = "ENDED"
            _add_durable(writer, StoredMessage(seq, data, True))
            await writer.index_moved()
        moves = self._move_commands(task_id, old, status, await self._score(task_id))
        await self._commands([*moves, self._outbox.ended_command(task_id, ended)])
        return StoredMessage(seq, data, True)

    def _sealed(self, task_id: str, writer: _Writer) -> None:
        """The flusher's synchronous step once a task's final message is durable (or its
        writes were refused): local readers get the finish, later ones go to Redis."""
        if self._writers.get(task_id) is writer:
            del self._writers[task_id]
        self._ending[task_id] = asyncio.get_running_loop().create_future()  # see _finished
        if writer.closing is not None and not writer.lost:
            writer.log.add(writer.closing)
        writer.log.finished = True
        writer.log.wake()

    async def _finished(self, task_id: str, writer: _Writer) -> None:
        """After ``_sealed``: move the task between the listing indexes."""
        try:
            await self._move_ended(task_id, writer)
        finally:
            ending = self._ending.pop(task_id, None)
            if ending is not None:
                ending.set_result(None)

    async def _move_ended(self, task_id: str, writer: _Writer) -> None:
        """The index moves of the status this process wrote, and the final record read back
        (kept a while in memory for readers), in one round trip."""
        await writer.index_moved()
        if writer.lost or writer.ended_as is None:
            return
        status = TaskStatus(writer.ended_as.decode())
        moves = self._move_commands(task_id, TaskStatus.RUNNING, status, writer.score)
        if status is not TaskStatus.RUNNING:
            moves.append(("ZREM", self._k.index(TaskStatus.PENDING), task_id))
        moves.append(self._outbox.ended_command(task_id, now_ms()))
        fields = _hash((await self._commands([("HGETALL", self._k.state(task_id)), *moves]))[0])
        if fields:
            record = _record(fields)
            if record.terminal and writer.log.finished:
                seconds = min(RECENT_SECONDS, self.result_ttl / 2)
                self._recent.remember(record, writer.log, seconds)

    async def read(self, task_id: str, after: int, limit: int) -> list[StoredMessage]:
        writer = self._writers.get(task_id)
        if writer is not None and writer.log.covers(after):
            messages = writer.log.since(after, limit)
            if writer.closing is not None and len(messages) < limit and not writer.log.finished:
                # The finish is being flushed: Redis may hold it before this process has the
                # reply, and a snapshot read from Redis may already say so.
                last = max(after, writer.log.last_seq)
                more = limit - len(messages)
                command = ("XRANGE", self._k.log(task_id), f"({last}-0", "+", "COUNT", more)
                messages += _messages((await self._commands([command]))[0])
            return messages
        recent = self._recent.get(task_id)
        if recent is not None:
            return recent[1].since(after, limit)
        entries, exists = await self._commands(
            [
                ("XRANGE", self._k.log(task_id), f"({after}-0", "+", "COUNT", limit),
                ("EXISTS", self._k.state(task_id)),
            ]
        )
        if not entries and not exists:
            raise TaskNotFound(task_id)
        return _messages(entries)

    async def tail(self, task_id: str, after: int, timeout: float) -> list[StoredMessage]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        writer = self._writers.get(task_id)
        if writer is not None and writer.log.covers(after):
            return await self._tail_local(task_id, writer, after, timeout)
        try:
            messages = await self.read(task_id, after, 1000)
        except (RedisError, OSError) as exc:
            _raise_if_cancelling()
            # Redis is away: the reader keeps its connection (heartbeats) and retries.
            logger.warning("tail of %s failed: %s", task_id, exc)
            await asyncio.sleep(min(timeout, 0.5))
            return []
        if messages:
            return messages
        # Caught up with Redis: wait on the one follower this process runs for the task. A
        # claim by this process (before or during the wait) hands the reader to the local log.
        if (writer := self._writers.get(task_id)) is None:
            follower = self._follow(task_id, after)
            follower.readers += 1
            try:
                await follower.log.wait_beyond(after, timeout)
            finally:
                follower.readers -= 1
            if follower.log.covers(after) and follower.log.last_seq > after:
                return follower.log.since(after, 1000)
            writer = self._writers.get(task_id)
        if writer is not None and writer.log.covers(after):
            return await self._tail_local(task_id, writer, after, max(0.0, deadline - loop.time()))
        return []

    async def _tail_local(
        self, task_id: str, writer: _Writer, after: int, timeout: float
    ) -> list[StoredMessage]:
        """Wait on the log this process writes (its readers see each flush as it is
        acknowledged, without reading it back from Redis)."""
        log = writer.log
        await log.wait_beyond(after, timeout)
        if log.last_seq > after:
            return log.since(after, 1000)
        return await self.read(task_id, after, 1000)

    def live_log(self, task_id: str, after: int) -> LocalLog | None:
        # Only the log this process writes: it is where messages appear first (once durable),
        # and a writer that goes away (handover, lost lease, the end) releases or ends it.
        writer = self._writers.get(task_id)
        if writer is None or writer.lost or writer.closing is not None:
            return None
        return writer.log if writer.log.parkable(after) else None

    def _follow(self, task_id: str, after: int) -> _Follower:
        follower = self._followers.get(task_id)
        if follower is None or not follower.log.covers(after) or follower.done:
            follower = _Follower(after)
            self._followers[task_id] = follower
            follower.task = asyncio.create_task(
                follower.run(self._client, self._k.log(task_id), self._unfollow(task_id)),
                name=f"follow-{task_id}",
            )
        return follower

    def _unfollow(self, task_id: str) -> Callable[[_Follower], None]:
        def forget(follower: _Follower) -> None:
            if self._followers.get(task_id) is follower:
                del self._followers[task_id]

        return forget
