"""The shared ground of ``RedisStore``'s parts: its state, one-round-trip command runs, and the
index moves and flush waits that records, logs and leases all use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.protocol import StoredMessage, TaskStatus
from gateway.store._lane import Lane, pack
from gateway.store._limits import RedisLimits
from gateway.store._outbox import RedisOutbox
from gateway.store._pending import LostWriter, _Writer
from gateway.store._recent import RecentLogs
from gateway.store._redis_parts import GROUP, SOCKET_TIMEOUT, _Follower, _Keys
from gateway.store._retention import RedisRetention
from gateway.store._writer import Flusher
from gateway.store.base import StoreUnavailable, StreamStore


def _add_durable(writer: _Writer, message: StoredMessage) -> None:
    """Give the local readers of a writer that is going away ``message``, written to Redis by
    a third party (a requeue, the sweeper), if it follows what they have; else they find it in
    Redis once the writer is gone (its unflushed messages were never visible)."""
    if not writer.log.finished and message.seq == writer.log.last_seq + 1:
        writer.log.add(message)
    else:
        writer.log.release()


class RedisCore(StreamStore):
    """What every part of ``RedisStore`` shares (its ``__init__`` sets these)."""

    url: str
    result_ttl: int
    _k: _Keys
    _cluster: bool
    # redis-py 8 types replies as wide unions; the shapes used here are fixed by the commands.
    _client: Any
    _append: Any
    _renew: Any
    _writers: dict[str, _Writer]
    _recent: RecentLogs  # finished here: replayed from memory for a while
    _group_ready: bool
    _read_entries: list[bytes]  # queue entries read, to delete on the next read
    _followers: dict[str, _Follower]
    _ending: dict[str, asyncio.Future[None]]  # ended here, indexes moving
    _lane: Lane | None  # the hot commands' own connection (none on a cluster or over TLS)
    _flusher: Flusher
    _retention: RedisRetention  # LOG_MAX_BYTES: trims the logs written here
    limits: RedisLimits  # the rate limit's buckets and the queue bound's script
    _outbox: RedisOutbox  # the deliveries at a task's end (``_outbox``)

    async def _commands(
        self, commands: Sequence[tuple[Any, ...]], *, repeatable: bool = True, now: bool = False
    ) -> list[Any]:
        """Run ``commands`` (each a command's parts) in one round trip: on the lane where there
        is one (a dropped connection retried once if the commands are ``repeatable``; ``now``:
        written at once, see ``Lane.calls``), else on a redis-py pipeline. Replies come raw (a
        hash is a flat list on the lane)."""
        lane = self._lane
        if lane is None:
            return await self._batch(lambda pipe: [pipe.execute_command(*c) for c in commands])
        packed = [pack(command) for command in commands]
        try:
            return await lane.calls(packed, now=now)
        except (RedisConnectionError, RedisTimeoutError):
            if not repeatable:
                raise
            return await lane.calls(packed, now=now)

    async def _batch(self, build: Callable[[Any], object]) -> list[Any]:
        """Run the commands ``build`` queues on one non-transactional pipeline."""
        async with self._client.pipeline(transaction=False) as pipe:
            build(pipe)
            return list(await pipe.execute())

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(self._k.queue, GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        self._group_ready = True

    def _enqueue_command(self, task_id: str) -> tuple[Any, ...]:
        return ("XADD", self._k.queue, "MAXLEN", "~", 1_000_000, "*", "t", task_id)

    async def _indexes_settled(self) -> None:
        """Wait for the index moves of this process's claims and ends still in flight (a
        listing, a count or a lease check after a claim must see the task RUNNING, after an
        end its final status)."""
        moves = [w.moved for w in self._writers.values() if w.moved and not w.moved.done()]
        moves += self._ending.values()
        if moves:
            await asyncio.wait(moves, timeout=SOCKET_TIMEOUT)

    async def _move(
        self, task_id: str, old: TaskStatus | str, new: TaskStatus, score: float
    ) -> None:
        await self._commands(self._move_commands(task_id, old, new, score))

    def _move_commands(
        self, task_id: str, old: TaskStatus | str, new: TaskStatus, score: float
    ) -> list[tuple[Any, ...]]:
        return [
            ("ZREM", self._k.index(old), task_id),
            ("ZADD", self._k.index(new), score, task_id),
        ]

    async def _score(self, task_id: str) -> float:
        raw = (await self._commands([("HGET", self._k.state(task_id), "score")]))[0]
        return float(raw) if raw else 0.0

    async def _flushed(self, writer: _Writer) -> None:
        """Wait until everything ``writer`` holds is in Redis (bounded)."""
        if writer.flushed_seq >= writer.last_seq or writer.lost:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writer.waiters.append((writer.last_seq, done))
        with contextlib.suppress(LostWriter, TimeoutError):
            await asyncio.wait_for(done, 10)
