"""``RedisStore``'s task records: creation (with idempotency keys), reads, the listing indexes,
and the notes kept beside a task."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.protocol import TaskRecord, TaskStatus
from gateway.store._pending import _Writer
from gateway.store._redis_core import RedisCore
from gateway.store._redis_parts import _hash, _record, _scored
from gateway.store.base import (
    IdempotencyKeyReused,
    QueueLimitReached,
    StoreUnavailable,
    TaskExtras,
    claimed,
    decode_cursor,
    encode_cursor,
    request_digest,
)


class RecordsMixin(RedisCore):
    """Task records and the sorted sets that list them."""

    async def create(
        self,
        record: TaskRecord,
        idempotency_key: str | None = None,
        *,
        queue: bool = False,
        claim: tuple[str, int] | None = None,
        max_queued: int | None = None,
        extras: TaskExtras | None = None,
    ) -> tuple[TaskRecord, bool]:
        if idempotency_key is not None:
            idem = self._k.idempotency(idempotency_key)
            digest = request_digest(record)
            # The key's value: "<task id> <request digest>" (task ids never hold a space).
            # Not repeated on a dropped connection: a SET that landed would then read as lost.
            value = f"{record.task_id} {digest}"
            set_nx = ("SET", idem, value, "NX", "EX", self.result_ttl)
            if (await self._commands([set_nx], repeatable=False, now=True))[0] is None:
                winner, known_digest = await self._idempotent_winner(idem)
                if known_digest and known_digest != digest:  # empty: stored before digests
                    raise IdempotencyKeyReused(idempotency_key)
                return winner, False
        score = record.created_at * 1000.0 + random.randrange(1000)
        if claim is not None:
            record = claimed(record, *claim)
            queue = False
        state, task_id = self._k.state(record.task_id), record.task_id
        hset: tuple[Any, ...] = (
            *("HSET", state, "taskId", task_id, "requestId", record.request_id),
            *("agentType", record.agent_type, "query", record.query),
            *("status", record.status.value, "createdAt", record.created_at, "lastSeq", 0),
            *("request", orjson.dumps(record.request), "score", repr(score)),
        )
        if record.tenant is not None:
            hset += ("tenant", record.tenant)
        if claim is not None:
            hset += ("owner", record.owner, "leaseUntil", record.lease_until)
            hset += ("startedAt", record.started_at)
        commands: list[tuple[Any, ...]] = [  # beside the record first: see create_commands
            *self._outbox.create_commands(record, extras.deliveries if extras else ()),
            *self._note_commands(task_id, extras),
            hset,
            ("EXPIRE", state, self.result_ttl * 2),
            ("ZADD", self._k.all, score, task_id),
            ("ZADD", self._k.index(record.status), score, task_id),
        ]
        if queue:
            commands.append(self._enqueue_command(task_id))
        # Written at once, not at the end of this turn: a start waits for this round trip.
        if queue and max_queued is not None:
            pending = self._k.index(TaskStatus.PENDING)
            if not await self.limits.admit(pending, max_queued, commands):
                if idempotency_key is not None:  # the key named a task never made
                    await self._commands([("DEL", self._k.idempotency(idempotency_key))])
                raise QueueLimitReached(f"{max_queued} tasks are queued")
        else:
            await self._commands(commands, repeatable=not queue, now=True)
        if claim is not None:
            self._writers[record.task_id] = _Writer(0, claim[0], score)
        return record, True

    def _note_commands(self, task_id: str, extras: TaskExtras | None) -> list[tuple[Any, ...]]:
        """What ``annotate`` writes, for each of ``extras``' notes."""
        if extras is None:
            return []
        return [
            command
            for kind, fields in extras.notes.items()
            for command in self._note_write(task_id, kind, fields, extras.note_ttl)
        ]

    def _note_write(
        self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int
    ) -> list[tuple[Any, ...]]:
        """The commands that merge ``fields`` into a note and restart its expiry."""
        if not fields:
            return []
        key = self._k.note(task_id, kind)
        return [("HSET", key, *(p for pair in fields.items() for p in pair)), ("EXPIRE", key, ttl)]

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
        tenant: str | None = None,
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
            live = [rec for rec in records if rec is not None]
            visible = {r.task_id for r in await self.only_tenant(live, tenant)}
            stale = []
            for (score, member), rec in zip(rows, records, strict=True):
                if rec is None:
                    stale.append(member)
                elif (status is None or rec.status is status) and member in visible:
                    found.append((score, rec))
            if stale:
                await self._commands([("ZREM", key, *stale)])
            bound = rows[-1]
        page = found[:limit]
        more = len(found) > limit
        next_cursor = encode_cursor(page[-1][0], page[-1][1].task_id) if more else None
        return [rec for _, rec in page], next_cursor

    async def _get_all(self, task_ids: list[str]) -> list[TaskRecord | None]:
        if not task_ids:
            return []
        replies = await self._commands([("HGETALL", self._k.state(t)) for t in task_ids])
        return [_record(fields) if (fields := _hash(reply)) else None for reply in replies]

    async def count(self, status: TaskStatus) -> int:
        await self._indexes_settled()
        return int((await self._commands([("ZCARD", self._k.index(status))]))[0])

    async def annotate(self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int) -> None:
        commands = self._note_write(task_id, kind, fields, ttl)
        if commands:
            await self._commands(commands)

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
