"""The ``StreamStore`` contract: task records, each task's append-only log, leases and the queue.

Both implementations (``MemoryStore``, ``RedisStore``) pass one contract test suite. The log of a
task is a sequence of messages with ``seq`` 1, 2, 3 … without gaps; exactly one message has
``finish`` set and it is the last. A finished task's records expire ``result_ttl`` seconds later.

Durable before visible (DESIGN §3): ``read``, ``tail`` and ``live_log`` serve a message only once
a crash can no longer take it back — at once in ``MemoryStore`` (the log is the process), once
Redis has acknowledged its write in ``RedisStore`` — so a seq a reader saw is never reused.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import dataclasses
import enum
import functools
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.protocol import StoredMessage, TaskError, TaskRecord, TaskStatus, now_ms
from gateway.protocol.compaction import CompactedLogs
from gateway.store._limits import Limits
from gateway.store._log import LocalLog
from gateway.store._outbox import Outbox

LEGACY_OWNER_NOTE = "owner"
"""The note in which earlier releases kept a task's tenant (read, never written now)."""


class StoreError(GatewayError):
    """Root of the store's errors."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The backing store cannot be reached."""

    code = "store_unavailable"
    status_code = 503


class TaskNotFound(StoreError):
    """No task with that id (never existed, or expired)."""

    code = "not_found"
    status_code = 404


class TaskEnded(StoreError):
    """The task's log is closed: its ``finish`` message is written (or this writer lost it)."""

    code = "task_ended"
    status_code = 409


class IllegalTransition(StoreError):
    """A status change the lifecycle does not allow."""

    code = "illegal_transition"
    status_code = 409


class IdempotencyKeyReused(StoreError):
    """The idempotency key already names a task created for a different request."""

    code = "idempotency_key_reused"
    status_code = 422


class QueueLimitReached(StoreError):
    """``create`` with ``max_queued``: that many tasks are already PENDING."""

    code = "queue_full"
    status_code = 429


def request_digest(record: TaskRecord) -> str:
    """What an idempotency key is stored with: a hash of ``record.request`` in canonical form
    (the validated request with its defaults, keys sorted), so key order, spacing or an
    omitted default do not make the same request a different one."""
    canonical = orjson.dumps(record.request, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def claimed(record: TaskRecord, owner: str, lease_ms: int) -> TaskRecord:
    """``record`` as a claim leaves it: RUNNING, started now, leased to ``owner``."""
    now = now_ms()
    return dataclasses.replace(
        record, status=TaskStatus.RUNNING, started_at=now, owner=owner, lease_until=now + lease_ms
    )


class LeaseState(enum.Enum):
    """Answer of ``renew``: keep going, stop because cancel was asked, or the lease is gone."""

    OK = "ok"
    CANCEL = "cancel"
    LOST = "lost"


def encode_cursor(score: float, task_id: str) -> str:
    """An opaque listing cursor (newest first) for the position after ``task_id``."""
    raw = f"{score!r}:{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of ``encode_cursor``; raises ``ValueError`` on anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score, _, task_id = base64.urlsafe_b64decode(padded).decode().partition(":")
        if not task_id:
            raise ValueError("empty task id")
        return float(score), task_id
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


@dataclasses.dataclass(frozen=True, slots=True)
class TaskExtras:
    """What a task is created with beside its record, in the same step (``create``): notes by
    kind, as :meth:`StreamStore.annotate` writes them (expiring ``note_ttl`` seconds later),
    and named outbox deliveries, as ``outbox.enroll`` adds them (due once the task ends)."""

    notes: Mapping[str, Mapping[str, str]]
    note_ttl: int
    deliveries: Sequence[str] = ()


class StreamStore(abc.ABC):
    """Durable task state and logs. All methods are safe to call concurrently."""

    limits: Limits
    """The deployment-wide rate limit's buckets (in this process, or shared: see ``_limits``)."""
    outbox: Outbox
    """The deliveries made at a task's end (``gateway.store._outbox``); a task created with a
    ``callbackUrl`` has its webhook there from the start, as it has its ``extras``' deliveries."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections and start background work (flusher)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what is buffered, stop background work, close connections."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    # -- task records ---------------------------------------------------------------------
    @abc.abstractmethod
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
        """Store a new PENDING task; with a known ``idempotency_key`` return that task instead.

        The key is stored with :func:`request_digest` of ``record``: a known key whose task was
        created for a different request raises :class:`IdempotencyKeyReused`.

        With ``queue`` a created task is also enqueued (in the same round trip where the store
        can). With ``claim=(owner, lease_ms)`` it is created already claimed, as ``claim()``
        would leave it (RUNNING, leased to ``owner``), and not queued: a replica with a free
        slot starts it without a trip through the queue. Returns ``(record, created)``.

        With ``queue`` and ``max_queued``, a new task is created only while fewer than
        ``max_queued`` tasks wait (counted with the create, atomically: the bound holds across
        replicas), else :class:`QueueLimitReached` and nothing is stored.

        ``extras`` (notes, outbox deliveries) are written with a created task, in the same
        round trip as its record, so no crash leaves the task without them; a known key's
        task is returned as it is (nothing of ``extras`` is written).
        """

    @abc.abstractmethod
    async def get(self, task_id: str) -> TaskRecord | None:
        """The current record, or ``None``."""

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """Records for the ids that exist, in the order asked."""
        records = [await self.get(task_id) for task_id in task_ids]
        return [r for r in records if r is not None]

    async def get_for(self, task_id: str, tenant: str | None) -> TaskRecord | None:
        """The record if the caller ``tenant`` (an API key name) may see it, else ``None`` —
        for another tenant's task as for a missing one (DESIGN §10). With ``tenant`` ``None``
        (auth off) every task is visible."""
        record = await self.get(task_id)
        if record is None or tenant is None:
            return record
        return record if (await self.tenants_of([record]))[0] == tenant else None

    async def only_tenant(
        self, records: Sequence[TaskRecord], tenant: str | None
    ) -> list[TaskRecord]:
        """Those of ``records`` that ``tenant`` may see (all of them with ``tenant`` ``None``)."""
        if tenant is None:
            return list(records)
        tenants = await self.tenants_of(records)
        return [r for r, t in zip(records, tenants, strict=True) if t == tenant]

    async def tenants_of(self, records: Sequence[TaskRecord]) -> list[str | None]:
        """Each record's tenant. Earlier releases kept it in an ``owner`` note beside the task,
        not in its record: for a record without one the note is read (one batch, and only
        while such tasks live: at most ``result_ttl`` after an upgrade)."""
        older = [r.task_id for r in records if r.tenant is None]
        if not older:
            return [r.tenant for r in records]
        notes = dict(zip(older, await self.annotations(older, LEGACY_OWNER_NOTE), strict=True))
        return [r.tenant or notes[r.task_id].get("name") for r in records]

    @abc.abstractmethod
    async def list_tasks(
        self,
        status: TaskStatus | None,
        limit: int,
        cursor: str | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """Newest first; returns a page and the cursor of the next page (``None`` at the end).

        With ``tenant``, only the tasks that tenant may see (:meth:`only_tenant`): the page is
        filled with those, so it holds ``limit`` tasks unless it is the last.
        """

    @abc.abstractmethod
    async def count(self, status: TaskStatus) -> int:
        """How many live tasks have ``status``."""

    # -- lifecycle ------------------------------------------------------------------------
    @abc.abstractmethod
    async def claim(self, task_id: str, owner: str, lease_ms: int) -> TaskRecord | None:
        """PENDING → RUNNING with a lease held by ``owner``; ``None`` if not PENDING."""

    @abc.abstractmethod
    async def renew(self, task_id: str, owner: str, lease_ms: int) -> LeaseState:
        """Extend ``owner``'s lease; says whether a cancel was requested or the lease is lost."""

    async def renew_many(
        self, task_ids: Sequence[str], owner: str, lease_ms: int
    ) -> list[LeaseState]:
        """:meth:`renew` for several tasks (in one round trip where the store can)."""
        return list(await asyncio.gather(*(self.renew(t, owner, lease_ms) for t in task_ids)))

    @abc.abstractmethod
    async def request_cancel(self, task_id: str) -> None:
        """Ask the owner of a RUNNING task to stop (it sees ``LeaseState.CANCEL``)."""

    @abc.abstractmethod
    async def requeue(
        self, task_id: str, body: dict[str, Any], *, owner: str | None, now: int
    ) -> StoredMessage | None:
        """RUNNING → PENDING, appending ``body`` (a non-final ``status`` message).

        With ``owner`` only that owner may do it (a handover); without, only if the lease
        lapsed before ``now`` (a retry after a dead worker). Counts ``attempts``. The caller
        enqueues the task again. Returns ``None`` when the condition does not hold.
        """

    @property
    def shared(self) -> bool:
        """Whether other processes see this store (so work can be handed over)."""
        return False

    @abc.abstractmethod
    async def expired_leases(self, now: int) -> list[str]:
        """Ids of RUNNING tasks whose lease ended before ``now`` (epoch ms)."""

    # -- the log --------------------------------------------------------------------------
    @abc.abstractmethod
    async def append(self, task_id: str, body: dict[str, Any] | bytes) -> StoredMessage:
        """Append a non-final message; assigns the next ``seq``. Raises ``TaskEnded``.
        ``body`` is the message's fields, or their JSON (an object without ``seq``, ending
        with ``"finish":false}``)."""

    def append_now(self, task_id: str, body: dict[str, Any] | bytes) -> StoredMessage | None:
        """``append`` without waiting, where the store can (this process writes the task's
        log); None where it cannot (then ``append``). Raises ``TaskEnded``."""
        return None

    @abc.abstractmethod
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
        """Append the ``finish`` message and move to terminal ``status`` atomically.

        Without ``expect`` the caller is the task's writer (its owner). With ``expect`` it is a
        third party (a cancel of a PENDING task, the sweeper): the change happens only if the
        current status is in ``expect``, else ``None`` is returned. Resolves once durable.
        """

    @abc.abstractmethod
    async def read(self, task_id: str, after: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` durable messages with ``seq > after``, in order; never blocks."""

    @abc.abstractmethod
    async def tail(self, task_id: str, after: int, timeout: float) -> list[StoredMessage]:
        """Like ``read``, but waits up to ``timeout`` seconds for a message after ``after``."""

    @functools.cached_property
    def replays(self) -> CompactedLogs:
        """Finished tasks' compacted replays, kept for the next readers (``store.replay``)."""
        return CompactedLogs()

    async def floor(self, task_id: str) -> int:
        """The retention floor of the task's log: every message up to it is gone (bounded
        retention, ``gateway.store._retention``), so only a cursor at or above it resumes
        exactly; 0 while nothing was dropped. Messages above it may be compacted (deltas
        whose final frame is kept). Raises ``TaskNotFound``."""
        return 0

    def live_log(self, task_id: str, after: int) -> LocalLog | None:
        """The in-process log of ``task_id`` where a reader that has read up to ``after``, its
        last message, can ``park`` and be handed the next ones as they are added; None where
        this process does not write the task's log (then ``tail``)."""
        return None

    # -- the queue ------------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(self, task_id: str) -> None:
        """Hand a PENDING task to the workers (of any replica)."""

    async def dequeue(self, consumer: str, timeout: float) -> str | None:
        """Next queued task id, waiting up to ``timeout`` seconds."""
        ids = await self.dequeue_many(consumer, timeout, 1)
        return ids[0] if ids else None

    @abc.abstractmethod
    async def dequeue_many(self, consumer: str, timeout: float, limit: int) -> list[str]:
        """Up to ``limit`` queued task ids (in queue order), waiting up to ``timeout`` seconds
        for the first; empty on timeout."""

    # -- annotations ----------------------------------------------------------------------
    @abc.abstractmethod
    async def annotate(self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int) -> None:
        """Merge ``fields`` into the task's ``kind`` record (owner, webhook delivery …) and
        (re)start its expiry of ``ttl`` seconds. The record lives beside the task's keys."""

    @abc.abstractmethod
    async def annotations(self, task_ids: Sequence[str], kind: str) -> list[dict[str, str]]:
        """The ``kind`` records of ``task_ids`` in order (empty where there is none)."""

    async def sweep_index(self, now: int) -> None:  # noqa: B027 - optional hook
        """Drop expired entries from listing indexes (no-op where not needed)."""
