"""The task manager: submission, a bounded worker pool, timeouts, cancellation, leases, sweeping.

Workers take tasks from the store's queue (so any replica may run any task); each running task
holds a lease its worker renews; the sweeper ends tasks whose lease lapsed as
``FAILED/interrupted`` with a terminal message, so no reader waits forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
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
from gateway.settings import Settings
from gateway.store import LeaseState, StreamStore, TaskEnded, TaskNotFound
from gateway.tasks._runner import RunningTask, run_task
from gateway.tasks.context import TaskRegistry

logger = logging.getLogger(__name__)


def _reraise_cancellation() -> None:
    """Raise ``CancelledError`` if this task is being cancelled.

    redis-py may turn a cancellation that lands inside a command into a connection error; a
    loop that logs and carries on after errors must not take that for an ordinary failure.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class QueueFull(Exception):
    """Too many tasks wait; the caller should retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the task queue is full")
        self.retry_after = retry_after


class UnknownAgentType(ValueError):
    """No handler is registered for the requested ``agentType``."""


class TaskManager:
    """Owns the workers, the lease renewer and the sweeper of one gateway process."""

    def __init__(
        self,
        store: StreamStore,
        registry: TaskRegistry,
        settings: Settings,
        services: Mapping[str, Any] | None = None,
        on_append: Any = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.services: Mapping[str, Any] = services or {}
        self.owner = f"{settings.replica_id}"
        self._on_append = on_append
        self.running: dict[str, RunningTask] = {}
        self._group: asyncio.TaskGroup | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_ttl * 1000)

    # -- submission -----------------------------------------------------------------------
    async def submit(
        self, request: AgentRequest, idempotency_key: str | None = None
    ) -> tuple[TaskRecord, bool]:
        """Create and enqueue a task; the same ``idempotency_key`` returns the same task."""
        if request.agent_type not in self.registry:
            raise UnknownAgentType(
                f"agentType {request.agent_type} is not one of {self.registry.agent_types}"
            )
        if await self.store.count(TaskStatus.PENDING) >= self.settings.max_queued:
            raise QueueFull(retry_after=max(1, int(self.settings.lease_renew_interval * 2)))
        task_id = new_task_id()
        record = TaskRecord(
            task_id=task_id,
            request_id=request.request_id or task_id,
            agent_type=request.agent_type,
            query=request.query,
            created_at=now_ms(),
            request=request.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        record, created = await self.store.create(record, idempotency_key)
        if created:
            await self.store.enqueue(record.task_id)
        return record, created

    # -- cancellation ---------------------------------------------------------------------
    async def cancel(self, task_id: str, *, wait: bool = True) -> TaskRecord:
        """Stop a task wherever it runs; returns the snapshot once the stop is confirmed.

        Idempotent: a finished task's snapshot is returned unchanged. If the owner does not
        confirm within ``cancel_wait`` seconds, the current (still RUNNING) snapshot is returned.
        """
        record = await self.store.get(task_id)
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
        """Run workers, the lease renewer and the sweeper until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._workers = [
                group.create_task(self._worker(f"{self.owner}-{index}"), name=f"worker-{index}")
                for index in range(self.settings.max_running)
            ]
            group.create_task(self._renew_leases(), name="lease-renewer")
            group.create_task(self._sweep(), name="sweeper")

    async def _worker(self, consumer: str) -> None:
        while not self._stopping.is_set():
            try:
                task_id = await self.store.dequeue(consumer, 1.0)
            except Exception:
                _reraise_cancellation()
                logger.exception("dequeue failed")
                await asyncio.sleep(1.0)
                continue
            _reraise_cancellation()
            if task_id is None or self._stopping.is_set():
                if task_id is not None:
                    await self.store.enqueue(task_id)  # hand it to another replica
                continue
            try:
                await run_task(self, task_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                _reraise_cancellation()
                logger.exception("task %s crashed its worker", task_id)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_renew_interval)
            running = list(self.running.items())
            states = await asyncio.gather(
                *(self.store.renew(task_id, self.owner, self.lease_ms) for task_id, _ in running),
                return_exceptions=True,
            )
            _reraise_cancellation()
            for (task_id, task), state in zip(running, states, strict=True):
                if isinstance(state, BaseException):
                    logger.warning("lease renewal of %s failed: %r", task_id, state)
                elif state is LeaseState.CANCEL:
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
        # Let every worker leave its loop by itself: one cancelled between taking a task off
        # the queue and putting it back would lose that task.
        if self._workers:
            await asyncio.wait(self._workers, timeout=10)

    def on_append(self, message: StoredMessage) -> None:
        if self._on_append is not None:
            self._on_append(message)

    def __repr__(self) -> str:
        return f"TaskManager(owner={self.owner!r}, running={len(self.running)})"


__all__ = ["QueueFull", "TaskManager", "UnknownAgentType"]
