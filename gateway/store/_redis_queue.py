"""``RedisStore``'s work queue and leases: enqueueing, claiming, renewing, cancelling and
requeueing tasks, and finding the leases that lapsed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from gateway.protocol import StoredMessage, TaskRecord, TaskStatus, encode_body, now_ms
from gateway.store import _scripts
from gateway.store._pending import _Writer
from gateway.store._redis_core import RedisCore, _add_durable
from gateway.store._redis_parts import GROUP, MAX_BLOCK, _raise_if_cancelling, _record
from gateway.store.base import LeaseState, StoreUnavailable, TaskNotFound

logger = logging.getLogger(__name__)

_LEASE_STATES = {1: LeaseState.OK, 2: LeaseState.CANCEL}


def _log_failed_move(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.warning("moving a claimed task to the RUNNING index failed: %r", exc)


class QueueMixin(RedisCore):
    """The queue workers read and the leases they hold."""

    async def claim(self, task_id: str, owner: str, lease_ms: int) -> TaskRecord | None:
        now = now_ms()
        # Not repeated on a dropped connection: a claim that landed would then read as refused.
        command = ("EVAL", _scripts.CLAIM, 1, self._k.state(task_id), owner, now + lease_ms, now)
        reply = (await self._commands([command], repeatable=False))[0]
        if not reply:
            return None
        fields = dict(zip(reply[::2], reply[1::2], strict=True))
        record = _record(fields)
        score = float(fields.get(b"score") or 0)
        writer = self._writers[task_id] = _Writer(record.last_seq, owner, score)
        follower = self._followers.get(task_id)
        if follower is not None:  # its readers switch to the local log (no Redis round trip)
            follower.log.release()
        # The listing index follows in the background: the task starts one round trip sooner.
        writer.moved = asyncio.ensure_future(
            self._move(task_id, TaskStatus.PENDING, TaskStatus.RUNNING, score)
        )
        writer.moved.add_done_callback(_log_failed_move)
        return record

    async def renew(self, task_id: str, owner: str, lease_ms: int) -> LeaseState:
        return (await self.renew_many([task_id], owner, lease_ms))[0]

    async def renew_many(
        self, task_ids: Sequence[str], owner: str, lease_ms: int
    ) -> list[LeaseState]:
        if not task_ids:
            return []
        args: list[str | int] = [owner, now_ms() + lease_ms]
        states = [self._k.state(t) for t in task_ids]
        if self._cluster:  # one hash slot per call
            replies = await asyncio.gather(*(self._renew(keys=[s], args=args) for s in states))
            answers = [reply[0] for reply in replies]
        else:
            answers = await self._renew(keys=states, args=args)
        return [_LEASE_STATES.get(int(a), LeaseState.LOST) for a in answers]

    async def request_cancel(self, task_id: str) -> None:
        # One script: an HSET alone would create a stray hash for a task that is gone.
        command = ("EVAL", _scripts.CANCEL, 1, self._k.state(task_id))
        if not (await self._commands([command]))[0]:
            raise TaskNotFound(task_id)

    @property
    def shared(self) -> bool:
        return True

    async def requeue(
        self, task_id: str, body: dict[str, Any], *, owner: str | None, now: int
    ) -> StoredMessage | None:
        writer = self._writers.get(task_id)
        if writer is not None:
            await self._flushed(writer)
        body["finish"] = False
        command = ("EVAL", _scripts.REQUEUE, 2, *self._k.task(task_id), owner or "", now)
        reply = (await self._commands([(*command, encode_body(body))], repeatable=False))[0]
        if reply is None:
            return None
        message = StoredMessage(int(reply[0]), reply[1], False)
        stale = self._writers.pop(task_id, None)
        if stale is not None:  # local readers must not wait on a writer that is gone
            stale.lost = "REQUEUED"
            _add_durable(stale, message)
            stale.log.release()  # parked readers go on from Redis
            await stale.index_moved()
        await self._move(
            task_id, TaskStatus.RUNNING, TaskStatus.PENDING, await self._score(task_id)
        )
        return message

    async def expired_leases(self, now: int) -> list[str]:
        await self._indexes_settled()
        running = [
            m.decode() for m in await self._client.zrange(self._k.index(TaskStatus.RUNNING), 0, -1)
        ]
        if not running:
            return []
        replies = await self._batch(
            lambda pipe: [pipe.hmget(self._k.state(t), "status", "leaseUntil") for t in running]
        )
        expired = []
        for task_id, (status, lease) in zip(running, replies, strict=True):
            if status == b"RUNNING" and lease is not None and int(lease) < now:
                expired.append(task_id)
        return expired

    async def enqueue(self, task_id: str) -> None:
        await self._commands([self._enqueue_command(task_id)], repeatable=False)

    async def dequeue_many(self, consumer: str, timeout: float, limit: int) -> list[str]:
        """One round trip: read with NOACK (a read entry is never redelivered) and delete the
        entries read before on the same pipeline (they only take memory)."""
        read, self._read_entries = self._read_entries, []
        block = max(1, int(min(timeout, MAX_BLOCK) * 1000))

        def build(pipe: Any) -> None:
            if read:
                pipe.xdel(self._k.queue, *read)
            pipe.xreadgroup(
                GROUP, consumer, {self._k.queue: ">"}, count=limit, block=block, noack=True
            )

        try:
            await self._ensure_group()
            reply = (await self._batch(build))[-1]
        except (StoreUnavailable, RedisError, OSError) as exc:
            _raise_if_cancelling()
            self._read_entries = read + self._read_entries
            if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                self._group_ready = False  # the queue was deleted (e.g. a flushed Redis)
            await asyncio.sleep(timeout)  # Redis is away: wait, do not spin
            return []
        if not reply:
            return []
        entries = reply[0][1]
        self._read_entries.extend(entry_id for entry_id, _ in entries)
        return [fields[b"t"].decode() for _, fields in entries]
