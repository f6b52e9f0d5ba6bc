"""``MemoryStore``: the embedded, single-process store (the default without ``REDIS_URL``)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.protocol import (
    StoredMessage,
    TaskError,
    TaskRecord,
    TaskStatus,
    appended_message,
    encode_message,
    is_legal_transition,
    now_ms,
)
from gateway.store._limits import MemoryLimits
from gateway.store._log import LocalLog
from gateway.store._outbox import MemoryOutbox
from gateway.store._retention import retain_local
from gateway.store.base import (
    IdempotencyKeyReused,
    IllegalTransition,
    LeaseState,
    QueueLimitReached,
    StreamStore,
    TaskEnded,
    TaskExtras,
    TaskNotFound,
    claimed,
    decode_cursor,
    encode_cursor,
    request_digest,
)


class _Entry:
    """One task: its record, whose ``last_seq`` follows the log (brought up to date when read,
    not rewritten per append), its log and its listing score."""

    __slots__ = ("_record", "bytes", "cancel_requested", "expires", "floor", "log", "score")

    def __init__(self, record: TaskRecord, log: LocalLog, score: float) -> None:
        self._record = record
        self.log = log
        self.score = score
        self.expires: float | None = None
        self.cancel_requested = False
        self.bytes = 0  # of the log, counted while it is bounded (``log_max_bytes``)
        self.floor = 0  # see ``StreamStore.floor``

    @property
    def record(self) -> TaskRecord:
        record = self._record
        if record.last_seq != self.log.last_seq:
            record = self._record = dataclasses.replace(record, last_seq=self.log.last_seq)
        return record

    @record.setter
    def record(self, record: TaskRecord) -> None:
        self._record = record


class MemoryStore(StreamStore):
    """Everything in this process: dicts of records and ``LocalLog``s, an ``asyncio.Queue``."""

    def __init__(self, result_ttl: float = 86_400.0, log_max_bytes: int = 0) -> None:
        self.result_ttl = result_ttl
        self.log_max_bytes = log_max_bytes  # per task; 0: unbounded
        self._tasks: dict[str, _Entry] = {}
        # idempotency key → (task id, expiry, request digest)
        self._idempotency: dict[str, tuple[str, float, str]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._notes: dict[tuple[str, str], tuple[dict[str, str], float]] = {}
        self._tiebreak = itertools.count()
        self.limits = MemoryLimits()
        self.outbox = self._outbox = MemoryOutbox(self.get)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    # -- records --------------------------------------------------------------------------
    def _live(self, task_id: str) -> _Entry | None:
        entry = self._tasks.get(task_id)
        if entry is not None and entry.expires is not None and entry.expires <= time.monotonic():
            del self._tasks[task_id]
            return None
        return entry

    def _entry(self, task_id: str) -> _Entry:
        entry = self._live(task_id)
        if entry is None:
            raise TaskNotFound(task_id)
        return entry

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
        digest = "" if idempotency_key is None else request_digest(record)
        if idempotency_key is not None:
            known = self._idempotency.get(idempotency_key)
            if known is not None and known[1] > time.monotonic():
                existing = self._live(known[0])
                if existing is not None:
                    if known[2] != digest:
                        raise IdempotencyKeyReused(idempotency_key)
                    return existing.record, False
        if queue and claim is None and max_queued is not None:
            # The queue's length (O(1); a cancelled task counts until the intake drops it).
            if self._queue.qsize() >= max_queued:
                raise QueueLimitReached(f"{max_queued} tasks are queued")
        score = record.created_at * 1000.0 + next(self._tiebreak) % 1000
        if claim is not None:
            record = claimed(record, *claim)
            queue = False
        self._tasks[record.task_id] = _Entry(record, LocalLog(), score)
        if extras is not None:
            for kind, fields in extras.notes.items():
                self._annotate(record.task_id, kind, fields, extras.note_ttl)
        self._outbox.created(record, extras.deliveries if extras else ())
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = (
                record.task_id,
                time.monotonic() + self.result_ttl,
                digest,
            )
        if queue:
            await self.enqueue(record.task_id)
        return record, True

    async def get(self, task_id: str) -> TaskRecord | None:
        entry = self._live(task_id)
        return entry.record if entry else None

    async def list_tasks(
        self,
        status: TaskStatus | None,
        limit: int,
        cursor: str | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        entries = sorted(
            (e for e in list(self._tasks.values()) if self._live(e.record.task_id)),
            key=lambda e: (e.score, e.record.task_id),
            reverse=True,
        )
        if status is not None:
            entries = [e for e in entries if e.record.status is status]
        if tenant is not None:
            visible = await self.only_tenant([e.record for e in entries], tenant)
            seen = {r.task_id for r in visible}
            entries = [e for e in entries if e.record.task_id in seen]
        if cursor is not None:
            after = decode_cursor(cursor)
            entries = [e for e in entries if (e.score, e.record.task_id) < after]
        page = entries[:limit]
        more = len(entries) > limit
        next_cursor = encode_cursor(page[-1].score, page[-1].record.task_id) if more else None
        return [e.record for e in page], next_cursor

    async def count(self, status: TaskStatus) -> int:
        return sum(1 for e in list(self._tasks.values()) if e.record.status is status)

    # -- lifecycle ------------------------------------------------------------------------
    async def claim(self, task_id: str, owner: str, lease_ms: int) -> TaskRecord | None:
        entry = self._live(task_id)
        if entry is None or entry.record.status is not TaskStatus.PENDING:
            return None
        entry.record = claimed(entry.record, owner, lease_ms)
        return entry.record

    async def renew(self, task_id: str, owner: str, lease_ms: int) -> LeaseState:
        entry = self._live(task_id)
        if entry is None or entry.record.terminal or entry.record.owner != owner:
            return LeaseState.LOST
        entry.record = dataclasses.replace(entry.record, lease_until=now_ms() + lease_ms)
        return LeaseState.CANCEL if entry.cancel_requested else LeaseState.OK

    async def request_cancel(self, task_id: str) -> None:
        self._entry(task_id).cancel_requested = True

    async def requeue(
        self, task_id: str, body: dict[str, Any], *, owner: str | None, now: int
    ) -> StoredMessage | None:
        entry = self._live(task_id)
        if entry is None or entry.record.status is not TaskStatus.RUNNING:
            return None
        record = entry.record
        if owner is not None and record.owner != owner:
            return None
        if owner is None and (record.lease_until or 0) >= now:
            return None
        body["finish"] = False
        message = encode_message(entry.log.last_seq + 1, body)
        entry.log.add(message)
        entry.record = dataclasses.replace(
            record,
            status=TaskStatus.PENDING,
            owner=None,
            lease_until=None,
            last_seq=message.seq,
            attempts=record.attempts + 1,
        )
        return message

    async def expired_leases(self, now: int) -> list[str]:
        return [
            e.record.task_id
            for e in list(self._tasks.values())
            if e.record.status is TaskStatus.RUNNING
            and e.record.lease_until is not None
            and e.record.lease_until < now
        ]

    # -- log ------------------------------------------------------------------------------
    async def append(self, task_id: str, body: dict[str, Any] | bytes) -> StoredMessage:
        return self.append_now(task_id, body)

    def append_now(self, task_id: str, body: dict[str, Any] | bytes) -> StoredMessage:
        entry = self._entry(task_id)
        if entry.log.finished or entry._record.terminal:  # (the status, not the last seq)
            raise TaskEnded(task_id)
        log = entry.log
        message = appended_message(log.last_seq + 1, body)
        log.add(message)
        if self.log_max_bytes:
            self._retain(entry, message)
        return message

    def _retain(self, entry: _Entry, message: StoredMessage) -> None:
        """Keep the entry's log within ``log_max_bytes`` (``gateway.store._retention``)."""
        entry.bytes += len(message.data)
        if entry.bytes > self.log_max_bytes:
            floor, entry.bytes = retain_local(entry.log, self.log_max_bytes)
            entry.floor = max(entry.floor, floor)

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
        entry = self._entry(task_id)
        current = entry.record.status
        if expect is not None and current not in expect:
            return None
        if entry.log.finished or entry.record.terminal:
            raise TaskEnded(task_id)
        if not is_legal_transition(current, status):
            raise IllegalTransition(f"{current} -> {status}")
        body["finish"] = True
        message = encode_message(entry.log.last_seq + 1, body)
        entry.record = dataclasses.replace(
            entry.record,
            status=status,
            ended_at=now_ms(),
            error=error,
            result=result if result is not None else entry.record.result,
            last_seq=message.seq,
            owner=None,
            lease_until=None,
        )
        entry.expires = time.monotonic() + self.result_ttl
        entry.log.add(message)
        if self.log_max_bytes:
            self._retain(entry, message)
        self._outbox.ended(task_id)
        return message

    async def floor(self, task_id: str) -> int:
        return self._entry(task_id).floor

    async def read(self, task_id: str, after: int, limit: int) -> list[StoredMessage]:
        return self._entry(task_id).log.since(after, limit)

    async def tail(self, task_id: str, after: int, timeout: float) -> list[StoredMessage]:
        log = self._entry(task_id).log
        await log.wait_beyond(after, timeout)
        return log.since(after, 1000)

    def live_log(self, task_id: str, after: int) -> LocalLog | None:
        entry = self._tasks.get(task_id)
        return entry.log if entry is not None and entry.log.parkable(after) else None

    # -- queue ----------------------------------------------------------------------------
    async def enqueue(self, task_id: str) -> None:
        self._queue.put_nowait(task_id)

    async def dequeue_many(self, consumer: str, timeout: float, limit: int) -> list[str]:
        try:
            async with asyncio.timeout(timeout):
                ids = [await self._queue.get()]
        except TimeoutError:
            return []
        while len(ids) < limit and not self._queue.empty():
            ids.append(self._queue.get_nowait())
        return ids

    async def annotate(self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int) -> None:
        self._annotate(task_id, kind, fields, ttl)

    def _annotate(self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int) -> None:
        now = time.monotonic()
        old = self._notes.get((kind, task_id))
        merged = {**(old[0] if old and old[1] > now else {}), **fields}
        self._notes[(kind, task_id)] = (merged, now + ttl)

    async def annotations(self, task_ids: Sequence[str], kind: str) -> list[dict[str, str]]:
        now = time.monotonic()
        out = []
        for task_id in task_ids:
            note = self._notes.get((kind, task_id))
            out.append(dict(note[0]) if note and note[1] > now else {})
        return out

    async def sweep_index(self, now: int) -> None:
        for task_id in list(self._tasks):
            self._live(task_id)
        self._outbox.sweep(lambda task_id: task_id in self._tasks)
        deadline = time.monotonic()
        for key, (_, expires, _) in list(self._idempotency.items()):
            if expires <= deadline:
                del self._idempotency[key]
        for note_key, (_, expires) in list(self._notes.items()):
            if expires <= deadline:
                del self._notes[note_key]
