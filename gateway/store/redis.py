"""``RedisStore``: the durable, multi-replica store (DESIGN §7).

Keys (the task id is the hash tag, so Redis Cluster works; ``agw`` is the default prefix):
``agw:{id}:state`` (hash), ``agw:{id}:log`` (a Redis Stream whose entry ids are ``<seq>-0``),
``agw:idem:{key}`` (idempotency), ``agw:idx:<STATUS>`` and ``agw:idx:all`` (sorted sets for
listing), ``agw:queue`` (a Redis Stream read by the consumer group ``agw-workers``). Task keys
expire ``result_ttl`` after the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.protocol import (
    TERMINAL_STATUSES,
    StoredMessage,
    TaskError,
    TaskRecord,
    TaskStatus,
    appended_message,
    encode_body,
    now_ms,
    stamp_seq,
)
from gateway.store import _scripts
from gateway.store._lane import Lane, pack
from gateway.store._limits import RedisLimits
from gateway.store._log import LocalLog
from gateway.store._pending import LostWriter, _Writer
from gateway.store._recent import RecentLogs
from gateway.store._redis_parts import (
    GROUP,
    MAX_BLOCK,
    SOCKET_TIMEOUT,
    _Follower,
    _hash,
    _Keys,
    _messages,
    _raise_if_cancelling,
    _record,
    _scored,
)
from gateway.store._writer import Flusher
from gateway.store.base import (
    IdempotencyKeyReused,
    LeaseState,
    QueueLimitReached,
    StoreUnavailable,
    StreamStore,
    TaskEnded,
    TaskNotFound,
    claimed,
    decode_cursor,
    encode_cursor,
    request_digest,
)

logger = logging.getLogger(__name__)


_LEASE_STATES = {1: LeaseState.OK, 2: LeaseState.CANCEL}


def _log_failed_move(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.warning("moving a claimed task to the RUNNING index failed: %r", exc)


UNREACHABLE: tuple[type[Exception], ...] = (
    StoreUnavailable,
    RedisConnectionError,
    RedisTimeoutError,
)
"""What a store call raises when Redis cannot be reached (the API answers 503, not 500)."""

RECENT_SECONDS = 60.0
"""Seconds the log of a task finished in this process is replayed from memory."""


def _add_durable(writer: _Writer, message: StoredMessage) -> None:
    """Give the local readers of a writer that is going away ``message``, written to Redis by
    a third party (a requeue, the sweeper), if it follows what they have; else they find it in
    Redis once the writer is gone (its unflushed messages were never visible)."""
    if not writer.log.finished and message.seq == writer.log.last_seq + 1:
        writer.log.add(message)
    else:
        writer.log.release()


class RedisStore(StreamStore):
    """``StreamStore`` over Redis with coalesced writes and in-memory wake-ups for local readers."""

    def __init__(
        self,
        url: str,
        *,
        result_ttl: int = 86_400,
        flush_interval: float = 0.0,
        flush_spacing: float = 0.0,
        prefix: str = "agw",
        cluster: bool = False,
        max_connections: int = 2048,
        on_flush: Callable[[float], None] | None = None,
    ) -> None:
        self.url = url
        self.result_ttl = int(result_ttl)
        self._k = _Keys(prefix)
        self._cluster = cluster
        # redis-py 8 types replies as wide unions; the shapes used here are fixed by the commands.
        self._client: Any = (
            RedisCluster.from_url(
                url, socket_timeout=SOCKET_TIMEOUT, max_connections=max_connections
            )
            if cluster
            else aioredis.Redis.from_url(
                url,
                health_check_interval=30,
                socket_timeout=SOCKET_TIMEOUT,
                max_connections=max_connections,
            )
        )
        self._append = self._client.register_script(_scripts.APPEND)
        self._renew = self._client.register_script(_scripts.RENEW)
        self._writers: dict[str, _Writer] = {}
        # Finished here: replayed from memory for a while (never longer than Redis keeps them).
        self._recent = RecentLogs()
        self._group_ready = False
        self._read_entries: list[bytes] = []  # queue entries read, to delete on the next read
        self._followers: dict[str, _Follower] = {}
        self._ending: dict[str, asyncio.Future[None]] = {}  # ended here, indexes moving
        # The hot commands' own connection (none on a cluster or over TLS: redis-py then).
        self._lane = None if cluster else Lane.for_pool(self._pool, SOCKET_TIMEOUT)
        self.limits = RedisLimits(self._commands, prefix, cluster=cluster)
        self._flusher = Flusher(
            self._client,
            self._append,
            self._k.task,
            on_flush or (lambda _seconds: None),
            self._sealed,
            self._finished,
            flush_interval,
            one_call=not cluster,
            lane=self._lane,
            spacing=flush_spacing,
        )

    @property
    def _pool(self) -> Any:
        return self._client.connection_pool

    async def start(self) -> None:
        """Start the flusher; an unreachable Redis is logged, not fatal (``/readyz`` fails)."""
        self._flusher.start()
        try:
            await self._ensure_group()
        except StoreUnavailable as exc:
            logger.error("Redis is unreachable at start (%s); retrying in the background", exc)

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

    async def close(self) -> None:
        followers = [f.task for f in self._followers.values() if f.task is not None]
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await self._flusher.close()
        await self._client.aclose()

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    # -- records --------------------------------------------------------------------------
    async def create(
        self,
        record: TaskRecord,
        idempotency_key: str | None = None,
        *,
        queue: bool = False,
        claim: tuple[str, int] | None = None,
        max_queued: int | None = None,
    ) -> tuple[TaskRecord, bool]:
        if idempotency_key is not None:
            idem = self._k.idempotency(idempotency_key)
            digest = request_digest(record)
            # The key's value: "<task id> <request digest>" (task ids never hold a space).
            # Not repeated on a dropped connection: a SET that landed would then read as lost.
            value = f"{record.task_id} {digest}"
            set_nx = ("SET", idem, value, "NX", "EX", self.result_ttl)
            if (await self._commands([set_nx], repeatable=False))[0] is None:
                winner, known_digest = await self._idempotent_winner(idem)
                if known_digest and known_digest != digest:  # empty: stored before digests
                    raise IdempotencyKeyReused(idempotency_key)
                return winner, False
        score = record.created_at * 1000.0 + random.randrange(1000)
        if claim is not None:
            record = claimed(record, *claim)
            queue = False
        mapping: dict[str, Any] = {
            "taskId": record.task_id,
            "requestId": record.request_id,
            "agentType": record.agent_type,
            "query": record.query,
            "status": record.status.value,
            "createdAt": record.created_at,
            "lastSeq": 0,
            "request": orjson.dumps(record.request),
            "score": repr(score),
        }
        if claim is not None:
            mapping.update(
                owner=record.owner, leaseUntil=record.lease_until, startedAt=record.started_at
            )
        state, task_id = self._k.state(record.task_id), record.task_id
        commands: list[tuple[Any, ...]] = [
            ("HSET", state, *(part for pair in mapping.items() for part in pair)),
            ("EXPIRE", state, self.result_ttl * 2),
            ("ZADD", self._k.all, score, task_id),
            ("ZADD", self._k.index(record.status), score, task_id),
        ]
        if queue:
            commands.append(self._enqueue_command(task_id))
        if queue and max_queued is not None:
            pending = self._k.index(TaskStatus.PENDING)
            if not await self.limits.admit(pending, max_queued, commands):
                if idempotency_key is not None:  # the key named a task never made
                    await self._commands([("DEL", self._k.idempotency(idempotency_key))])
                raise QueueLimitReached(f"{max_queued} tasks are queued")
        else:
            await self._commands(commands, repeatable=not queue)
        if claim is not None:
            self._writers[record.task_id] = _Writer(0, claim[0], score)
        return record, True

    async def _commands(
        self, commands: Sequence[tuple[Any, ...]], *, repeatable: bool = True
    ) -> list[Any]:
        """Run ``commands`` (each a command's parts) in one round trip: on the lane where there
        is one (a dropped connection retried once if the commands are ``repeatable``), else on
        a redis-py pipeline. Replies come raw (a hash is a flat list on the lane)."""
        lane = self._lane
        if lane is None:
            return await self._batch(lambda pipe: [pipe.execute_command(*c) for c in commands])
        packed = [pack(command) for command in commands]
        try:
            return await lane.calls(packed)
        except (RedisConnectionError, RedisTimeoutError):
            if not repeatable:
                raise
            return await lane.calls(packed)

    async def _batch(self, build: Callable[[Any], object]) -> list[Any]:
        """Run the commands ``build`` queues on one non-transactional pipeline."""
        async with self._client.pipeline(transaction=False) as pipe:
            build(pipe)
            return list(await pipe.execute())

    async def _idempotent_winner(self, idem: str) -> tuple[TaskRecord, str]:
        """The task an idempotency key names, and the digest of the request it was made for."""
        # The winner may still be writing its record: wait for it, bounded.
        for _ in range(100):
            value = (await self._commands([("GET", idem)]))[0]
            if value is not None:
                task_id, _, digest = value.decode().partition(" ")
                record = await self.get(task_id)
                if record is not None:
                    return record, digest
            await asyncio.sleep(0.01)
        raise StoreUnavailable("idempotent task record did not appear")

    async def get(self, task_id: str) -> TaskRecord | None:
        recent = self._recent.get(task_id)
        if recent is not None:
            return recent[0]
        # On the lane: one write and one read. Through redis-py's pool a call yields to the
        # loop several times (pool lock, connection checks), and on a busy loop each yield
        # waits a whole turn: a resuming reader's first event came 40-60 ms late.
        fields = _hash((await self._commands([("HGETALL", self._k.state(task_id))]))[0])
        if not fields:
            return None
        # ``lastSeq`` is what Redis holds: never less than what this process's readers see
        # (a message becomes visible once its write is acknowledged), never a seq unwritten.
        return _record(fields)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        return [r for r in await self._get_all(list(task_ids)) if r is not None]

    async def list_tasks(
        self,
        status: TaskStatus | None,
        limit: int,
        cursor: str | None,
        *,
        owned_by: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        await self._indexes_settled()
        key = self._k.index(status) if status is not None else self._k.all
        bound: tuple[float, str] | None = decode_cursor(cursor) if cursor else None
        found: list[tuple[float, TaskRecord]] = []
        while len(found) <= limit:
            top = bound[0] if bound else "+inf"
            command = ("ZREVRANGEBYSCORE", key, top, "-inf", "WITHSCORES", "LIMIT", 0, limit + 17)
            rows = _scored((await self._commands([command]))[0])
            rows = [row for row in rows if not bound or row < bound]
            if not rows:
                break
            records = await self._get_all([m for _, m in rows])
            owners = await self._owners([m for _, m in rows], owned_by)
            stale = []
            for (score, member), rec, owner in zip(rows, records, owners, strict=True):
                if rec is None:
                    stale.append(member)
                elif (status is None or rec.status is status) and owner == owned_by:
                    found.append((score, rec))
            if stale:
                await self._commands([("ZREM", key, *stale)])
            bound = rows[-1]
        page = found[:limit]
        more = len(found) > limit
        next_cursor = encode_cursor(page[-1][0], page[-1][1].task_id) if more else None
        return [rec for _, rec in page], next_cursor

    async def _owners(self, task_ids: list[str], owned_by: str | None) -> list[str | None]:
        """The owner names of ``task_ids`` when a listing asks for ``owned_by`` (else ``None``
        each, which matches a listing that does not ask)."""
        if owned_by is None:
            return [None] * len(task_ids)
        return [note.get("name") for note in await self.annotations(task_ids, "owner")]

    async def _get_all(self, task_ids: list[str]) -> list[TaskRecord | None]:
        if not task_ids:
            return []
        replies = await self._commands([("HGETALL", self._k.state(t)) for t in task_ids])
        return [_record(fields) if (fields := _hash(reply)) else None for reply in replies]

    async def count(self, status: TaskStatus) -> int:
        await self._indexes_settled()
        return int((await self._commands([("ZCARD", self._k.index(status))]))[0])

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

    # -- lifecycle ------------------------------------------------------------------------
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

    async def _flushed(self, writer: _Writer) -> None:
        """Wait until everything ``writer`` holds is in Redis (bounded)."""
        if writer.flushed_seq >= writer.last_seq or writer.lost:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writer.waiters.append((writer.last_seq, done))
        with contextlib.suppress(LostWriter, TimeoutError):
            await asyncio.wait_for(done, 10)

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

    # -- log ------------------------------------------------------------------------------
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
        await self._move(task_id, old, status, await self._score(task_id))
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

    # -- queue ----------------------------------------------------------------------------
    def _enqueue_command(self, task_id: str) -> tuple[Any, ...]:
        return ("XADD", self._k.queue, "MAXLEN", "~", 1_000_000, "*", "t", task_id)

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

    async def annotate(self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int) -> None:
        key = self._k.note(task_id, kind)

        def build(pipe: Any) -> None:
            pipe.hset(key, mapping=dict(fields))
            pipe.expire(key, ttl)

        await self._batch(build)

    async def annotations(self, task_ids: Sequence[str], kind: str) -> list[dict[str, str]]:
        rows = await self._batch(
            lambda pipe: [pipe.hgetall(self._k.note(task_id, kind)) for task_id in task_ids]
        )
        return [{k.decode(): v.decode() for k, v in row.items()} for row in rows]

    async def sweep_index(self, now: int) -> None:
        horizon = (now - self.result_ttl * 2000) * 1000.0
        await self._client.zremrangebyscore(self._k.all, "-inf", horizon)
        for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
            await self._client.zremrangebyscore(self._k.index(status), "-inf", horizon)

    def __repr__(self) -> str:
        return f"RedisStore(flush_interval={self._flusher._interval}, writers={len(self._writers)})"
