"""The task manager: submission, bounded concurrency, timeouts, cancellation, leases, sweeping.

One intake per process takes tasks from the store's queue while fewer than ``MAX_RUNNING`` run
(so any replica may run any task); each running task holds a lease its process renews; the
sweeper ends tasks whose lease lapsed as ``FAILED/interrupted`` with a terminal message, so no
reader waits forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from gateway.printer import Printer
from gateway.protocol import (
    AgentRequest,
    ErrorCode,
    StoredMessage,
    TaskError,
    TaskRecord,
    TaskStatus,
    new_task_id,
    now_ms,
)
from gateway.store import (
    LeaseState,
    QueueLimitReached,
    StreamStore,
    TaskEnded,
    TaskExtras,
    TaskNotFound,
)
from gateway.tasks._runner import Collaborators, Launch, RunningTask, launch, run_task
from gateway.tasks.context import QueueFull, TaskRegistry, TaskSettings, UnknownAgentType

logger = logging.getLogger(__name__)


def _reraise_cancellation() -> None:
    """Raise ``CancelledError`` if this task is being cancelled.

    redis-py may turn a cancellation that lands inside a command into a connection error; a
    loop that logs and carries on after errors must not take that for an ordinary failure.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


TAKE_BATCH = 64
"""Most tasks taken off the queue in one round trip."""


class TaskManager:
    """Owns the intake, the task runners, the lease renewer and the sweeper of one process."""

    def __init__(
        self,
        store: StreamStore,
        registry: TaskRegistry,
        settings: TaskSettings,
        services: Mapping[str, Any] | None = None,
        on_append: Callable[[StoredMessage], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.services: Mapping[str, Any] = services or {}
        self.owner = f"{settings.replica_id}"
        self.running: dict[str, RunningTask] = {}
        self._group: asyncio.TaskGroup | None = None
        self._intake: asyncio.Task[None] | None = None
        self._runners: set[asyncio.Task[None]] = set()
        self._free = settings.max_running  # slots: tasks this process may start now
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._collaborators = Collaborators(
            store=store,
            registry=registry,
            services=self.services,
            owner=self.owner,
            lease_ms=self.lease_ms,
            task_timeout=settings.task_timeout,
            running=self.running,
            hand_over=self.hand_over,
            on_append=on_append,
        )

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_ttl * 1000)

    # -- submission -----------------------------------------------------------------------
    async def submit(
        self,
        request: AgentRequest,
        idempotency_key: str | None = None,
        *,
        tenant: str | None = None,
        task_id: str | None = None,
        extras: TaskExtras | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Create and enqueue a task; the same ``idempotency_key`` returns the same task.

        ``tenant`` (the caller's API key name) is written with the record: the task is that
        caller's alone from its first write (DESIGN §10). ``extras`` (notes, deliveries) are
        written with it too (``StreamStore.create``); a caller whose extras name the task
        gives its id, made with ``new_task_id`` (else a new one is made here)."""
        if request.agent_type not in self.registry:
            raise UnknownAgentType(
                f"agentType {request.agent_type} is not one of {self.registry.agent_types}"
            )
        # A free slot here: the task is created already claimed and starts at once (no trip
        # through the queue: two round trips less to the first token). The slot is taken
        # before the first await so that concurrent submissions cannot overbook it.
        local = self._free > 0 and self._group is not None and not self._stopping.is_set()
        if local:
            self._free -= 1
        task_id = task_id or new_task_id()
        record = TaskRecord(
            task_id=task_id,
            request_id=request.request_id or task_id,
            agent_type=request.agent_type,
            query=request.query,
            created_at=now_ms(),
            request=request.model_dump(mode="json", by_alias=True, exclude_none=True),
            tenant=tenant,
        )
        if not local:  # the store counts the queued tasks with the create: for all replicas
            try:
                return await self.store.create(
                    record,
                    idempotency_key,
                    queue=True,
                    max_queued=self.settings.max_queued,
                    extras=extras,
                )
            except QueueLimitReached as exc:
                retry_after = max(1, int(self.settings.lease_renew_interval * 2))
                raise QueueFull(retry_after=retry_after) from exc
        try:
            record, created = await self.store.create(
                record, idempotency_key, claim=(self.owner, self.lease_ms), extras=extras
            )
        except BaseException:
            self._slot_back()
            raise
        if created:
            self._start(task_id, launch(record, self._collaborators, request))
        else:  # an earlier submission with this key made the task
            self._slot_back()
        return record, created

    # -- cancellation ---------------------------------------------------------------------
    async def cancel(
        self, task_id: str, *, wait: bool = True, tenant: str | None = None
    ) -> TaskRecord:
        """Stop a task wherever it runs; returns the snapshot once the stop is confirmed.

        Idempotent: a finished task's snapshot is returned unchanged. If the owner does not
        confirm within ``cancel_wait`` seconds, the current (still RUNNING) snapshot is returned.
        With ``tenant``, another tenant's task is :class:`TaskNotFound`, as a missing one.
        """
        record = await self.store.get_for(task_id, tenant)
        if record is None:
            raise TaskNotFound(task_id)
        if record.terminal:
            return record
        if record.status is TaskStatus.PENDING:
            body = Printer(self.store, task_id, record.request_id).body(
                "status", TaskStatus.CANCELLED.value, None, True
            )
            await self.store.finish(
                task_id, TaskStatus.CANCELLED, body, expect=frozenset({TaskStatus.PENDING})
            )
        else:
            local = self.running.get(task_id)
            if local is not None:
                local.stop("cancel")
            else:
                await self.store.request_cancel(task_id)
        if not wait:
            return record
        return await self.wait_terminal(task_id, self.settings.cancel_wait)

    async def wait_terminal(self, task_id: str, timeout: float) -> TaskRecord:
        """Wait (bounded) until the task's ``finish`` message is in the log."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            record = await self.store.get(task_id)
            if record is None:
                raise TaskNotFound(task_id)
            remaining = deadline - loop.time()
            if record.terminal or remaining <= 0:
                return record
            await self.store.tail(task_id, record.last_seq, min(remaining, 0.5))

    # -- background work ------------------------------------------------------------------
    async def run(self) -> None:
        """Run the intake, the lease renewer and the sweeper until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._intake = group.create_task(self._take_tasks(), name="intake")
            group.create_task(self._renew_leases(), name="lease-renewer")
            group.create_task(self._sweep(), name="sweeper")

    async def _take_tasks(self) -> None:
        """Take tasks off the queue while slots are free; each runs in its own asyncio task.

        One blocked dequeue per process, not one per slot: idle slots cost nothing, and a
        burst of submissions is taken up to ``TAKE_BATCH`` at a time, in one round trip.
        """
        while not self._stopping.is_set():
            if self._free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                ids = await self.store.dequeue_many(
                    self.owner, self.settings.intake_wait, min(self._free, TAKE_BATCH)
                )
            except Exception:
                _reraise_cancellation()
                logger.exception("dequeue failed")
                await asyncio.sleep(1.0)
                continue
            _reraise_cancellation()
            # Submissions that started here while the dequeue waited took slots it asked for:
            # what no slot is left for goes back to the queue (for another replica, or later).
            keep = 0 if self._stopping.is_set() else max(self._free, 0)
            for task_id in ids[keep:]:
                await self.store.enqueue(task_id)
            for task_id in ids[:keep]:
                self._free -= 1
                self._start(task_id)

    def _start(self, task_id: str, launched: Launch | None = None) -> None:
        """Run ``task_id`` in its own asyncio task; its slot is already taken. A task created
        here comes ``launched``: claimed, and begun in its submission's turn."""
        group = self._group
        if group is None:
            raise RuntimeError("the task manager is not running")
        runner = group.create_task(self._run_one(task_id, launched), name=f"task-{task_id}")
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    def _slot_back(self) -> None:
        self._free += 1
        self._slot_freed.set()

    async def _run_one(self, task_id: str, launched: Launch | None) -> None:
        try:
            if self._stopping.is_set():  # stopped before this task got going: pass it on
                if launched is None:
                    await self.store.enqueue(task_id)
                    return
                launched.running.stop("handover" if self.store.shared else "shutdown")
            await run_task(task_id, using=self._collaborators, launched=launched)
        except asyncio.CancelledError:
            raise
        except Exception:
            _reraise_cancellation()
            logger.exception("task %s crashed its runner", task_id)
        finally:
            self._slot_back()

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_renew_interval)
            running = list(self.running.items())
            if not running:
                continue
            try:
                states = await self.store.renew_many(
                    [task_id for task_id, _ in running], self.owner, self.lease_ms
                )
            except Exception as exc:
                _reraise_cancellation()
                logger.warning("lease renewal of %d tasks failed: %r", len(running), exc)
                continue
            for (_, task), state in zip(running, states, strict=True):
                if state is LeaseState.CANCEL:
                    task.stop("cancel")
                elif state is LeaseState.LOST:
                    task.stop("lost")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                await self.sweep_once()
                _reraise_cancellation()
            except Exception:
                _reraise_cancellation()
                logger.exception("sweep failed")

    async def sweep_once(self) -> list[str]:
        """Deal with every RUNNING task whose lease lapsed; returns their ids.

        Within ``TASK_RETRY`` attempts the task is queued again (another worker runs it from
        the start, after a ``status`` message saying so); after that it ends FAILED/interrupted.
        """
        handled = []
        now = now_ms()
        for task_id in await self.store.expired_leases(now):
            record = await self.store.get(task_id)
            if record is None:
                continue
            try:
                if record.attempts < self.settings.task_retry and await self._requeue(
                    record, owner=None, now=now, reason="retry"
                ):
                    logger.warning("task %s requeued: its worker stopped", task_id)
                elif await self._interrupt(record):
                    logger.warning("task %s interrupted: its lease lapsed", task_id)
                else:
                    continue
            except (TaskEnded, TaskNotFound):
                continue
            handled.append(task_id)
        await self.store.sweep_index(now)
        return handled

    async def _interrupt(self, record: TaskRecord) -> bool:
        """End a lapsed task with ``error/interrupted``: atomically, under the seq after the last
        durable one (no reader saw more), only while RUNNING (a stalled worker's later writes
        are then refused)."""
        error = TaskError(ErrorCode.INTERRUPTED, "the worker running this task stopped")
        body = Printer(self.store, record.task_id, record.request_id).body(
            "error", error.to_json(), None, True
        )
        message = await self.store.finish(
            record.task_id,
            TaskStatus.FAILED,
            body,
            error=error,
            expect=frozenset({TaskStatus.RUNNING}),
        )
        return message is not None

    async def _requeue(
        self, record: TaskRecord, *, owner: str | None, now: int, reason: str
    ) -> bool:
        body = Printer(self.store, record.task_id, record.request_id).body(
            "status", TaskStatus.PENDING.value, None, True, reason=reason
        )
        message = await self.store.requeue(record.task_id, body, owner=owner, now=now)
        if message is None:
            return False
        await self.store.enqueue(record.task_id)
        return True

    async def hand_over(self, task_id: str) -> bool:
        """Give a task this process stopped back to the queue of the other replicas."""
        record = await self.store.get(task_id)
        if record is None or not self.store.shared:
            return False
        return await self._requeue(record, owner=self.owner, now=now_ms(), reason="handover")

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work; give running tasks ``grace`` seconds, then stop them.

        With a shared store (Redis) a stopped task is handed over: queued again for another
        replica. With the embedded store it ends FAILED/interrupted.
        """
        self._stopping.set()
        grace = self.settings.shutdown_grace if grace is None else grace
        handlers = [r.handler_task for r in self.running.values() if r.handler_task]
        if handlers and grace > 0:
            await asyncio.wait(handlers, timeout=grace)
        reason = "handover" if self.store.shared else "shutdown"
        for running in list(self.running.values()):
            running.stop(reason)
        if self.running:
            await asyncio.wait([r.done for r in self.running.values()], timeout=10)
        # Let the intake leave its loop by itself (cancelled between taking a task off the
        # queue and putting it back, it would lose that task), and the runners end.
        pending = [*self._runners, *([self._intake] if self._intake else [])]
        if pending:
            await asyncio.wait(pending, timeout=10)

    def __repr__(self) -> str:
        return f"TaskManager(owner={self.owner!r}, running={len(self.running)})"


__all__ = ["QueueFull", "TaskManager", "UnknownAgentType"]
